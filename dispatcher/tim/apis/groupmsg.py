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

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import orjson

from dispatcher.tim import rules
from dispatcher.tim.apis.base import (
    EXPORT_KEYS,
    Details,
    Endpoint,
    Reject,
    Spec,
    common_message_fields,
    group_id,
    integer,
    message_body,
    string,
)

NAME: Final = "send_group_msg"
PATH: Final = "/v4/group_open_http_svc/send_group_msg"
PRIORITIES: Final = ("High", "Normal", "Low", "Lowest")
GROUP_RATE: Final = rules.GROUP_RATE
NO_RECIPIENTS: Final = (
    f"{NAME} sends one message to every member of the group and takes no recipients; "
    'to send to named accounts, use "api": "batchsendmsg"'
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
        **dict.fromkeys(("To_Account", "ToMembers_Account", "recipients_file", *EXPORT_KEYS), NO_RECIPIENTS),
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
