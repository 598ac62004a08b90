"""The sandbox's batchsendmsg: partial replies (an ErrorList of the accounts not delivered to),
unknown accounts (`--accounts`), and the per-minute message quota, counted per recipient."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from dispatcher.sandbox.apis.base import Box, Delivery, Emulator, Refusal, msg_body, uint32
from dispatcher.tim import rules
from dispatcher.tim.apis.batchsendmsg import (
    ACCOUNT_NOT_FOUND,
    BAD_LIFETIME,
    BAD_MSG_BODY,
    BAD_MSG_RANDOM,
    BAD_SYNC,
    BAD_TO_ACCOUNT,
    BODY_TOO_LARGE,
    JSON_ERROR,
    LIFETIME_OVER_7_DAYS,
    MAX_LIFETIME,
    MSG_BODY_NOT_ARRAY,
    NO_SUCH_ACCOUNT,
    QUOTA_SECONDS,
    TOO_MANY_RECIPIENTS,
    BatchSendMsg,
)

C2C: Final = "C2C"  # the ledger's "group" of one-to-one messages
# The page names no code for the per-minute message quota. The sandbox answers 60018 ("requests
# too frequent"), which the dispatcher retries; this is the sandbox's assumption, not Tencent's word.
QUOTA_EXCEEDED: Final = 60018
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


class BatchSendMsgEmulator(Emulator):
    api = BatchSendMsg
    json_error_code = JSON_ERROR

    def __init__(self) -> None:
        # Made by the first request that passes the checks: until then the stats have no quota figure.
        self.quota: _Quota | None = None

    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
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
        message = msg_body(body, BAD_MSG_BODY, BODY_TOO_LARGE)
        uint32(body, "MsgRandom", BAD_MSG_RANDOM, required=True)
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
        if self.quota is None:
            self.quota = _Quota()
        state = self.quota
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

    def stats(self) -> dict[str, int]:
        return {} if self.quota is None else {"max_messages_60s": self.quota.most}


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
