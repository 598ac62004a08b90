"""The APIs the sandbox serves: one emulation per API of `dispatcher.tim.apis.REGISTRY`, in its order,
then the read-only calls of `dispatcher check`."""

from __future__ import annotations

from typing import Final

from dispatcher.sandbox.apis.base import Box, Delivery, Emulator, Refusal
from dispatcher.sandbox.apis.batchsendmsg import BatchSendMsgEmulator
from dispatcher.sandbox.apis.groupmsg import GroupMsgEmulator
from dispatcher.sandbox.apis.notification import NotificationEmulator
from dispatcher.sandbox.apis.readonly import AccountCheckEmulator, GroupInfoEmulator
from dispatcher.sandbox.apis.timpush_batch import PUSH, TimPushBatchEmulator
from dispatcher.sandbox.apis.timpush_push import TimPushPushEmulator

EMULATORS: Final[tuple[type[Emulator], ...]] = (
    NotificationEmulator,
    BatchSendMsgEmulator,
    GroupMsgEmulator,
    TimPushBatchEmulator,
    TimPushPushEmulator,
    GroupInfoEmulator,
    AccountCheckEmulator,
)

__all__ = ["EMULATORS", "PUSH", "Box", "Delivery", "Emulator", "Refusal"]
