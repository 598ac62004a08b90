"""The APIs the dispatcher drives, by the name a job gives in "api". One line each."""

from __future__ import annotations

from typing import Final

from dispatcher.tim.apis.base import Endpoint
from dispatcher.tim.apis.batchsendmsg import BatchSendMsg
from dispatcher.tim.apis.groupmsg import GroupMsg
from dispatcher.tim.apis.notification import Notification
from dispatcher.tim.apis.timpush_batch import TimPushBatch
from dispatcher.tim.apis.timpush_push import TimPushPush

NOTIFICATION: Final[Endpoint] = Notification()

REGISTRY: Final[dict[str, Endpoint]] = {
    endpoint.name: endpoint
    for endpoint in (
        NOTIFICATION,
        BatchSendMsg(),
        GroupMsg(),
        TimPushBatch(),
        TimPushPush(),
    )
}
DEFAULT: Final = NOTIFICATION.name  # what a job without "api" means
DEFAULT_ENDPOINT: Final[Endpoint] = NOTIFICATION  # its endpoint

__all__ = ["DEFAULT", "DEFAULT_ENDPOINT", "NOTIFICATION", "REGISTRY", "Endpoint"]
