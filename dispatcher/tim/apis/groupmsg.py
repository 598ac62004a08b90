"""`v4/group_open_http_svc/send_group_msg`: one ordinary message into one group (or a Community
topic), seen by all its members. One job is one request.

Its `Random` is what makes a resend safe: the server takes a message with the same Random in the
same group within five minutes as the same message and drops it. The dispatcher derives Random
from the job hash and the batch (`base.batch_random`), so every attempt of a job, in this run or
after a crash and `--resume`, carries the same one.

A reply with ErrorCode 0 and a non-empty `MsgDropReason` means frequency control dropped the
message (at most 40 messages a second into one group): nothing was delivered, so it is retried
like an over-rate reply, never recorded `ok`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import orjson

from dispatcher.tim import rules
from dispatcher.tim.apis.base import (
    Delivery,
    Details,
    Endpoint,
    Refusal,
    Reject,
    Spec,
    common_message_fields,
    group_id,
    integer,
    message_body,
    sandbox_msg_body,
    sandbox_uint32,
    string,
)

if TYPE_CHECKING:
    from dispatcher.sandbox import Sandbox

NAME: Final = "send_group_msg"
PATH: Final = "/v4/group_open_http_svc/send_group_msg"
PRIORITIES: Final = ("High", "Normal", "Low", "Lowest")
DEDUP_SECONDS: Final = 300.0  # a repeated Random within this long is the same message
GROUP_RATE: Final = 40  # messages a second into one group before frequency control drops them
DROP_REASON: Final = "MsgFreqCtrl"
NO_RECIPIENTS: Final = (
    f"{NAME} sends one message to every member of the group and takes no recipients; "
    'to send to named accounts, use "api": "batchsendmsg"'
)
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


class GroupMsg(Endpoint):
    name = NAME
    path = PATH
    keys = (
        "api",
        "job_id",
        "GroupId",
        "TopicId",
        "group_type",
        "MsgBody",
        "Text",
        "From_Account",
        "MsgPriority",
        "OnlineOnlyFlag",
        "SendMsgControl",
        "CloudCustomData",
        "OfflinePushInfo",
    )
    reserved: ClassVar[dict[str, str]] = {
        "Random": "is set by the dispatcher, the same for every attempt of a job (the server's deduplication); "
        "leave it out",
        # Recipients of the other APIs: no "did you mean" (To_Account is close to From_Account, and
        # following that hint would send to the whole group from the account meant to receive it).
        **dict.fromkeys(("To_Account", "ToMembers_Account", "recipients_file"), NO_RECIPIENTS),
    }
    recipients_key = None  # a group message reaches the whole group
    group_rate = GROUP_RATE

    def validate(self, doc: Mapping[str, Any]) -> Spec:
        gid = group_id(doc)
        fields: dict[str, object] = {"GroupId": gid, "MsgBody": message_body(doc)}
        topic_id = string(doc, "TopicId")
        group_type = string(doc, "group_type")
        if group_type is not None and group_type not in rules.GROUP_TYPES:
            raise Reject("group_type", f"must be one of {', '.join(sorted(rules.GROUP_TYPES))}")
        if topic_id is not None:
            if group_type is not None and not rules.accepts_topics(group_type):
                raise Reject("TopicId", f"applies to Community groups only, not {group_type}")
            fields["TopicId"] = topic_id
        priority = string(doc, "MsgPriority")
        if priority is not None:
            if priority not in PRIORITIES:
                raise Reject("MsgPriority", f"must be one of {', '.join(PRIORITIES)}")
            fields["MsgPriority"] = priority
        online = integer(doc, "OnlineOnlyFlag", 0, 1)
        if online is not None:
            fields["OnlineOnlyFlag"] = online
        common_message_fields(doc, fields)
        return Spec(gid, fields, topic_id=topic_id, group_type=group_type)

    def hasher(self, spec: Spec, batch_size: int, all_members: bool) -> hashlib.blake2b:
        # --batch-size means nothing to a job of one request, and the hash is in its Random: a resume
        # with another --batch-size must send the same Random, or the server delivers the message
        # again. The default batch size keeps the hashes of journals written before this.
        return super().hasher(spec, rules.MAX_MEMBERS, all_members)

    def body(self, fields: Mapping[str, object], recipients: Sequence[str] | None, random: int) -> bytes:
        return orjson.dumps({**fields, "Random": random})

    def details(self, doc: Mapping[str, Any]) -> Details:
        reason = doc.get("MsgDropReason")
        return Details(dropped=reason) if isinstance(reason, str) and reason else Details()

    # -- the sandbox -----------------------------------------------------------------------------

    def emulate(self, box: Sandbox, body: Mapping[str, Any]) -> Delivery:
        unknown = set(body) - BODY_KEYS
        if unknown:
            raise Refusal(rules.INVALID_PARAMETER, f"unknown field {sorted(unknown)[0]}")
        gid, group = box.group(body.get("GroupId"))
        topic = box.topic(group, body.get("TopicId"))
        message = sandbox_msg_body(body, rules.INVALID_PARAMETER, rules.MESSAGE_TOO_LONG)
        random = sandbox_uint32(body, "Random", rules.INVALID_PARAMETER, required=True) or 0
        sender = body.get("From_Account")
        if sender is not None and rules.user_id_problem(sender):
            raise Refusal(rules.INVALID_PARAMETER, f"From_Account {rules.user_id_problem(sender)}")
        state = box.memory.setdefault(NAME, _State())
        assert isinstance(state, _State)

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
