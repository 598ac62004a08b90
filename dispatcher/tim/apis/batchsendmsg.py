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

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import orjson

from dispatcher.tim import rules
from dispatcher.tim.apis.base import (
    Delivery,
    Details,
    Endpoint,
    Refusal,
    Spec,
    common_message_fields,
    integer,
    message_body,
    sandbox_msg_body,
    sandbox_uint32,
)

if TYPE_CHECKING:
    from dispatcher.sandbox import Sandbox

NAME: Final = "batchsendmsg"
PATH: Final = "/v4/openim/batchsendmsg"
DEFAULT_QUOTA: Final = 12_000  # messages a minute, counted per recipient
QUOTA_SECONDS: Final = 60.0
C2C: Final = "C2C"  # the sandbox ledger's "group" of one-to-one messages
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
# The page names no code for the per-minute message quota. The sandbox answers 60018 ("requests
# too frequent"), which the dispatcher retries; this is the sandbox's assumption, not Tencent's word.
QUOTA_EXCEEDED: Final = 60018
INTERNAL: Final = frozenset({90992, 90994, 90995, 91000})

NO_GROUP: Final = (
    f"{NAME} sends one-to-one messages to the accounts in To_Account and takes no group; "
    'to send into a group, use "api": "send_group_msg"'
)
BODY_KEYS: Final = frozenset(
    {
        "To_Account",
        "From_Account",
        "SyncOtherMachine",
        "MsgSeq",
        "MsgRandom",
        "MsgBody",
        "CloudCustomData",
        "SendMsgControl",
        "OfflinePushInfo",
        "MsgLifeTime",
    }
)


class BatchSendMsg(Endpoint):
    name = NAME
    path = PATH
    keys = (
        "api",
        "job_id",
        "To_Account",
        "recipients_file",
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
    transient_codes: ClassVar[frozenset[int]] = INTERNAL
    over_rate_codes: ClassVar[frozenset[int]] = frozenset({60018, 60019})
    json_error_code = JSON_ERROR

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
        errors = doc.get("ErrorList")
        if not isinstance(errors, list):
            return Details()
        failures = []
        for item in errors:
            if isinstance(item, dict) and isinstance(item.get("To_Account"), str):
                code = item.get("ErrorCode")
                if type(code) is int and code == rules.OK:
                    continue  # an account listed as delivered: taken for a failure, --retry-failed would resend it
                failures.append((item["To_Account"], code if type(code) is int else -1))
        return Details(failures=tuple(failures))

    def classify(self, error_code: int | None, http_status: int | None, details: Details) -> rules.Verdict:
        if error_code == ADMIN_REQUIRED:
            return rules.Verdict.CONFIG  # every request would fail alike
        return super().classify(error_code, http_status, details)

    # -- the sandbox -----------------------------------------------------------------------------

    def emulate(self, box: Sandbox, body: Mapping[str, Any]) -> Delivery:
        unknown = set(body) - BODY_KEYS
        if unknown:
            raise Refusal(JSON_ERROR, f"unknown field {sorted(unknown)[0]}")
        to = body.get("To_Account")
        if not isinstance(to, list) or not to:
            raise Refusal(BAD_TO_ACCOUNT, "To_Account must be a non-empty array of UserIDs")
        if len(to) > rules.MAX_MEMBERS:
            raise Refusal(TOO_MANY_RECIPIENTS, f"To_Account lists more than {rules.MAX_MEMBERS} accounts")
        for uid in to:
            if rules.user_id_problem(uid):
                raise Refusal(BAD_TO_ACCOUNT, f"To_Account {uid!r}: {rules.user_id_problem(uid)}")
        if not isinstance(body.get("MsgBody"), list):
            raise Refusal(MSG_BODY_NOT_ARRAY, "MsgBody must be an array")
        message = sandbox_msg_body(body, BAD_MSG_BODY, BODY_TOO_LARGE)
        sandbox_uint32(body, "MsgRandom", BAD_MSG_RANDOM, required=True)
        if body.get("SyncOtherMachine", 1) not in (1, 2):
            raise Refusal(BAD_SYNC, "SyncOtherMachine must be 1 or 2")
        lifetime = body.get("MsgLifeTime", 0)
        if type(lifetime) is not int or lifetime < 0:
            raise Refusal(BAD_LIFETIME, "MsgLifeTime must be a whole number of seconds")
        if lifetime > MAX_LIFETIME:
            raise Refusal(LIFETIME_OVER_7_DAYS, "MsgLifeTime: offline storage of at most 7 days")
        sender = body.get("From_Account")
        if sender is not None and rules.user_id_problem(sender):
            raise Refusal(BAD_TO_ACCOUNT, f"From_Account {rules.user_id_problem(sender)}")
        state = box.memory.setdefault(NAME, _Quota())
        assert isinstance(state, _Quota)
        users = list(dict.fromkeys(to))

        def deliver(now: float) -> dict[str, Any]:
            if not state.admit(now, len(users), box.message_quota):
                raise Refusal(QUOTA_EXCEEDED, f"over {box.message_quota:,} messages a minute")
            box.stats["messages"] += len(users)
            failed = []
            delivered = []
            for uid in users:
                scripted = box.recipient_reply(uid)
                if scripted:
                    failed.append({"To_Account": uid, "ErrorCode": scripted})
                elif box.accounts is not None and uid not in box.accounts:
                    failed.append({"To_Account": uid, "ErrorCode": ACCOUNT_NOT_FOUND})
                else:
                    delivered.append(uid)
            box.ledger.add(C2C, None, message, delivered)
            reply: dict[str, Any] = {"MsgKey": f"{box.stats['messages']}_{len(users)}"}
            if failed:
                box.stats["recipient_errors"] += len(failed)
                reply["ErrorList"] = failed
            if not delivered:
                # None got it: the reply fails as a whole, with the ErrorList still naming each account.
                codes = {f["ErrorCode"] for f in failed}
                code = NO_SUCH_ACCOUNT if codes == {ACCOUNT_NOT_FOUND} else min(codes - {ACCOUNT_NOT_FOUND})
                raise Refusal(code, "no account of To_Account got the message", reply)
            return reply

        return deliver

    def sandbox_stats(self, box: Sandbox) -> dict[str, int]:
        state = box.memory.get(NAME)
        return {"max_messages_60s": state.most} if isinstance(state, _Quota) else {}


@dataclasses.dataclass
class _Quota:
    """Messages admitted in the last minute, one entry per request, counted per recipient."""

    window: collections.deque[tuple[float, int]] = dataclasses.field(default_factory=collections.deque)
    total: int = 0
    most: int = 0  # the most messages admitted in any minute

    def admit(self, now: float, count: int, quota: int) -> bool:
        while self.window and self.window[0][0] <= now - QUOTA_SECONDS:
            self.total -= self.window.popleft()[1]
        if self.total + count > quota:
            return False
        self.window.append((now, count))
        self.total += count
        self.most = max(self.most, self.total)
        return True
