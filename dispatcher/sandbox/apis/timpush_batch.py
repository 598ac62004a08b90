"""The sandbox's timpush/batch (Tencent's document 67553): the request's fields and limits, 90045
while the app has no Push Service (`Sandbox(push_enabled=False)`), an ErrorList of the accounts that
do not exist (`--accounts`), a repeat of a MsgRandom within the same second dropped, a TaskId per
push, and the ledger of what each account's devices would receive. Its rate (the edition's, 30 a
second by default) is the sandbox's rate window for its path (`Sandbox(api_rates=...)`)."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import orjson

from dispatcher.sandbox.apis.base import Box, Delivery, Emulator, Refusal, uint32
from dispatcher.tim import rules
from dispatcher.tim.apis.timpush_batch import (
    ACCOUNT_NOT_FOUND,
    BAD_MSG_RANDOM,
    DATA_ID_TOO_LONG,
    DEFAULT_RATE,
    JSON_ERROR,
    MAX_DATA_ID_BYTES,
    NOT_ENABLED,
    TOO_MANY_ACCOUNTS,
    TimPushBatch,
)

PUSH: Final = "PUSH"  # the ledger's "group" of pushes: content is the OfflinePushInfo, as compact JSON
BODY_KEYS: Final = frozenset({"From_Account", "To_Account", "MsgRandom", "OfflinePushInfo", "DataId"})
DEDUP_SECONDS: Final = 1.0  # "used to drop duplicates within the same second" (document 67553)


def not_enabled(box: Box) -> None:
    if not box.push_enabled:
        raise Refusal(NOT_ENABLED, "the Push Service is not enabled for this app")


def check_push(body: Mapping[str, Any], keys: frozenset[str]) -> str:
    """The checks both push APIs share; the push's content as the ledger keys it."""
    unknown = set(body) - keys
    if unknown:
        raise Refusal(JSON_ERROR, f"unknown field {sorted(unknown)[0]}")
    sender = body.get("From_Account")
    if rules.user_id_problem(sender):
        raise Refusal(JSON_ERROR, f"From_Account {rules.user_id_problem(sender)}")
    uint32(body, "MsgRandom", BAD_MSG_RANDOM, required=True)
    push = body.get("OfflinePushInfo")
    if not isinstance(push, dict):
        raise Refusal(JSON_ERROR, "OfflinePushInfo is required, an object")
    data_id = body.get("DataId")
    if data_id is not None:
        if not isinstance(data_id, str):
            raise Refusal(JSON_ERROR, "DataId must be a string")
        if len(data_id.encode("utf-8", "surrogatepass")) > MAX_DATA_ID_BYTES:
            raise Refusal(DATA_ID_TOO_LONG, f"DataId is longer than {MAX_DATA_ID_BYTES} bytes")
    return orjson.dumps(push, option=orjson.OPT_SORT_KEYS).decode()


class TimPushBatchEmulator(Emulator):
    api = TimPushBatch
    json_error_code = JSON_ERROR
    rate: ClassVar[int | None] = DEFAULT_RATE

    def __init__(self) -> None:
        self.tasks = 0
        self.duplicates = 0
        # MsgRandom -> (when it was taken, its TaskId), for the last DEDUP_SECONDS.
        self._recent: collections.OrderedDict[int, tuple[float, str]] = collections.OrderedDict()

    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
        not_enabled(box)
        content = check_push(body, BODY_KEYS)
        to = body.get("To_Account")
        if not isinstance(to, list) or not to:
            raise Refusal(JSON_ERROR, "To_Account must be a non-empty array of UserIDs")
        if len(to) > rules.MAX_MEMBERS:
            raise Refusal(TOO_MANY_ACCOUNTS, f"To_Account lists more than {rules.MAX_MEMBERS} accounts")
        for uid in to:
            if rules.user_id_problem(uid):
                raise Refusal(JSON_ERROR, f"To_Account {uid!r}: {rules.user_id_problem(uid)}")
        users = list(dict.fromkeys(to))
        random = body["MsgRandom"]

        def deliver(now: float) -> dict[str, Any]:
            recent = self._recent
            while recent and next(iter(recent.values()))[0] <= now - DEDUP_SECONDS:
                recent.popitem(last=False)
            if random in recent:  # the same push again within the second: dropped, answered as the first
                self.duplicates += 1
                return {"TaskId": recent[random][1]}
            self.tasks += 1
            task = f"batch_{self.tasks:08x}_{random:08x}"
            recent[random] = (now, task)
            failed = []
            delivered = []
            for uid in users:
                scripted = box.recipient_reply(uid)
                if scripted:
                    failed.append({"To_Account": uid, "ErrorCode": scripted, "ErrorInfo": "scripted"})
                elif box.accounts is not None and uid not in box.accounts:
                    failed.append({"To_Account": uid, "ErrorCode": ACCOUNT_NOT_FOUND, "ErrorInfo": "no such account"})
                else:
                    delivered.append(uid)
            box.ledger.add(PUSH, None, content, delivered)
            box.stats["pushed"] += len(delivered)
            reply: dict[str, Any] = {"TaskId": task}
            if failed:
                box.stats["recipient_errors"] += len(failed)
                reply["ErrorList"] = failed
            if not delivered:
                codes = {f["ErrorCode"] for f in failed}
                code = ACCOUNT_NOT_FOUND if codes == {ACCOUNT_NOT_FOUND} else min(codes - {ACCOUNT_NOT_FOUND})
                raise Refusal(code, "no account of To_Account was pushed to", reply)
            return reply

        return deliver

    def stats(self) -> dict[str, int]:
        # Only once pushed to, as the other APIs' counts: a run without pushes sees the stats it always did.
        counts = {"push_tasks": self.tasks, "push_duplicates_dropped": self.duplicates}
        return counts if self.tasks or self.duplicates else {}
