"""`v4/openim/batchsendmsg`: one one-to-one message to up to 500 accounts per call.

Two limits at once: 200 calls a second and 12,000 messages a minute, counted per recipient (a call
to 500 accounts is 500 messages), so a big list is paced by the quota, not the call rate. The
engine asks its limiter for one call and `len(recipients)` units of the quota per request.

Its reply is partial: ErrorCode 0 when any account got the message, with an `ErrorList` of the
accounts that did not and why. The engine records those per recipient, retries only the ones whose
failure is transient, and takes a permanent one (the account does not exist) as that recipient's
fate. Tencent documents no deduplication on `MsgRandom`: the dispatcher still sends a stable one
per batch, but a request in flight when a run is killed may be delivered twice on resume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import orjson

from dispatcher.tim import rules
from dispatcher.tim.apis.base import (
    EXPORT_KEYS,
    Details,
    Endpoint,
    Spec,
    common_message_fields,
    error_list,
    integer,
    message_body,
)

NAME: Final = "batchsendmsg"
PATH: Final = "/v4/openim/batchsendmsg"
DEFAULT_QUOTA: Final = rules.DEFAULT_MESSAGE_QUOTA
QUOTA_SECONDS: Final = rules.QUOTA_SECONDS
MAX_LIFETIME: Final = 7 * 24 * 3600  # MsgLifeTime, seconds: offline storage of at most 7 days

JSON_ERROR: Final = 90001
BAD_MSG_BODY: Final = 90002
BAD_TO_ACCOUNT: Final = 90003
BAD_MSG_RANDOM: Final = 90005
MSG_BODY_NOT_ARRAY: Final = 90007
ADMIN_REQUIRED: Final = 90009
TOO_MANY_RECIPIENTS: Final = 90011
NO_SUCH_ACCOUNT: Final = 90012  # whole request: none of the accounts exists
LIFETIME_OVER_7_DAYS: Final = 90026
BAD_SYNC: Final = 90031
BAD_LIFETIME: Final = 90044
ACCOUNT_NOT_FOUND: Final = 70107  # one account, in an ErrorList
BODY_TOO_LARGE: Final = 93000
INTERNAL: Final = frozenset({90992, 90994, 90995, 91000})

NO_GROUP: Final = (
    f"{NAME} sends one-to-one messages to the accounts in To_Account and takes no group; "
    'to send into a group, use "api": "send_group_msg"'
)


class BatchSendMsg(Endpoint):
    name = NAME
    path = PATH
    keys = (
        "api",
        "job_id",
        "To_Account",
        "recipients_file",
        *EXPORT_KEYS,
        "MsgBody",
        "Text",
        "From_Account",
        "SyncOtherMachine",
        "MsgSeq",
        "MsgLifeTime",
        "CloudCustomData",
        "SendMsgControl",
        "OfflinePushInfo",
    )
    reserved: ClassVar[dict[str, str]] = {
        "MsgRandom": "is set by the dispatcher, one per batch; leave it out",
        # A group's keys: the job would not reach the group, but nor may they be ignored.
        **dict.fromkeys(("GroupId", "TopicId"), NO_GROUP),
    }
    recipients_key = "To_Account"
    recipients_required = True
    counts_recipients = True
    quota_seconds = QUOTA_SECONDS
    one_to_one = True
    transient_codes: ClassVar[frozenset[int]] = INTERNAL
    over_rate_codes: ClassVar[frozenset[int]] = frozenset({60018, 60019})

    def validate(self, doc: Mapping[str, Any]) -> Spec:
        fields: dict[str, object] = {"MsgBody": message_body(doc)}
        sync = integer(doc, "SyncOtherMachine", 1, 2)
        if sync is not None:
            fields["SyncOtherMachine"] = sync
        seq = integer(doc, "MsgSeq", 0, rules.UINT32_MAX)
        if seq is not None:
            fields["MsgSeq"] = seq
        lifetime = integer(doc, "MsgLifeTime", 0, MAX_LIFETIME)
        if lifetime is not None:
            fields["MsgLifeTime"] = lifetime
        common_message_fields(doc, fields)
        return Spec(None, fields)

    def body(self, fields: Mapping[str, object], recipients: Sequence[str] | None, random: int) -> bytes:
        return orjson.dumps({**fields, "To_Account": recipients, "MsgRandom": random})

    def details(self, doc: Mapping[str, Any]) -> Details:
        return Details(failures=error_list(doc))

    def classify(self, error_code: int | None, http_status: int | None, details: Details) -> rules.Verdict:
        if error_code == ADMIN_REQUIRED:
            return rules.Verdict.CONFIG  # every request would fail alike
        return super().classify(error_code, http_status, details)
