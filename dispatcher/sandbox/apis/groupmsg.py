"""The sandbox's send_group_msg: Random deduplication for five minutes, and frequency control at
`group_rate` messages a second into one group (the excess answered ErrorCode 0 with a
MsgDropReason, delivered to no one)."""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Final

from dispatcher.sandbox.apis.base import Box, Delivery, Emulator, Refusal, msg_body, uint32
from dispatcher.tim import rules
from dispatcher.tim.apis.groupmsg import GroupMsg

DEDUP_SECONDS: Final = 300.0  # a repeated Random within this long is the same message
DROP_REASON: Final = "MsgFreqCtrl"
BODY_KEYS: Final = frozenset(
    {
        "GroupId",
        "Random",
        "MsgBody",
        "From_Account",
        "MsgPriority",
        "OnlineOnlyFlag",
        "SendMsgControl",
        "CloudCustomData",
        "TopicId",
        "OfflinePushInfo",
    }
)


class GroupMsgEmulator(Emulator):
    api = GroupMsg

    def __init__(self) -> None:
        self.state = _State()

    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
        unknown = set(body) - BODY_KEYS
        if unknown:
            raise Refusal(rules.INVALID_PARAMETER, f"unknown field {sorted(unknown)[0]}")
        gid, group = box.group(body.get("GroupId"))
        topic = box.topic(group, body.get("TopicId"))
        message = msg_body(body, rules.INVALID_PARAMETER, rules.MESSAGE_TOO_LONG)
        random = uint32(body, "Random", rules.INVALID_PARAMETER, required=True) or 0
        sender = body.get("From_Account")
        if sender is not None and rules.user_id_problem(sender):
            raise Refusal(rules.INVALID_PARAMETER, f"From_Account {rules.user_id_problem(sender)}")
        state = self.state

        def deliver(now: float) -> dict[str, Any]:
            key = (gid, topic, random)
            state.forget(now)
            seen = state.sent.get(key)
            if seen is not None:
                box.stats["duplicates_dropped"] += 1  # the same message: not delivered again
                return {"MsgTime": seen[1], "MsgSeq": seen[2]}
            window = state.windows[(gid, topic)]
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= box.group_rate:
                box.stats["freq_dropped"] += 1
                return {"MsgTime": int(time.time()), "MsgSeq": 0, "MsgDropReason": DROP_REASON}
            window.append(now)
            state.seq[gid] += 1
            stamp = int(time.time())
            state.sent[key] = (now, stamp, state.seq[gid])
            box.ledger.add(gid, topic, message, box.members(group, None))
            return {"MsgTime": stamp, "MsgSeq": state.seq[gid]}

        return deliver


@dataclasses.dataclass
class _State:
    """The sandbox's memory of this API: Randoms sent in the last five minutes, per group."""

    sent: dict[tuple[str, str | None, int], tuple[float, int, int]] = dataclasses.field(default_factory=dict)
    windows: collections.defaultdict[tuple[str, str | None], collections.deque[float]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.deque)
    )
    seq: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    checked: float = 0.0

    def forget(self, now: float) -> None:
        """Drop Randoms older than the window (once a second at most: it walks them all)."""
        if now - self.checked < 1.0:
            return
        self.checked = now
        self.sent = {k: v for k, v in self.sent.items() if v[0] > now - DEDUP_SECONDS}
