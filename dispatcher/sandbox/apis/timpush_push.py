"""The sandbox's timpush/push (Tencent's document 60561): a push to all users or to those a Condition
selects, with the page's limits: more than a second between two pushes (90024), a day's budget
(`Sandbox(push_daily_limit=100)`, over a sliding 24 hours; 90047), a body of at most 10 KB (90056),
the Condition's rules (90020, 90022, 90032, 90039, 90040), 90045 while the Push Service is off, and a
TaskId. The ledger gets one entry per account pushed to: every account of `--accounts` for a push to
all users (without accounts, the ledger's "*"), and for a Condition those whose tags and attributes
(`Sandbox(push_tags=..., push_attrs=...)`) match it."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import orjson

from dispatcher.sandbox.apis.base import Box, Delivery, Emulator, Refusal
from dispatcher.sandbox.apis.timpush_batch import PUSH, check_push, not_enabled
from dispatcher.sandbox.ledger import ALL_MEMBERS
from dispatcher.tim.apis.timpush_batch import JSON_ERROR
from dispatcher.tim.apis.timpush_push import (
    ATTR_KEYS,
    BODY_TOO_LARGE,
    DAY,
    MAX_BODY_BYTES,
    MAX_TAG_BYTES,
    MAX_TAGS,
    OVER_THE_DAY,
    TAG_KEYS,
    TOO_SOON,
    TimPushPush,
)

BODY_KEYS: Final = frozenset({"From_Account", "MsgRandom", "OfflinePushInfo", "Condition"})
TAG_TOO_LONG, TAG_IN_BOTH, TOO_MANY_TAGS, TAGS_AND_ATTRS, EMPTY_TAG = 90020, 90022, 90032, 90039, 90040


def _check_condition(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or not value or set(value) - {*TAG_KEYS, *ATTR_KEYS}:
        raise Refusal(JSON_ERROR, "Condition takes TagsAnd, TagsOr, AttrsAnd, AttrsOr")
    tags = [key for key in TAG_KEYS if key in value]
    if tags and any(key in value for key in ATTR_KEYS):
        raise Refusal(TAGS_AND_ATTRS, "a push by attributes and by tags cannot coexist")
    named = []
    for key in tags:
        if not isinstance(value[key], list):
            raise Refusal(JSON_ERROR, f"{key} must be an array")
        for tag in value[key]:
            if not isinstance(tag, str) or not tag:
                raise Refusal(EMPTY_TAG, "a tag of the push condition is empty")
            if len(tag.encode("utf-8", "surrogatepass")) > MAX_TAG_BYTES:
                raise Refusal(TAG_TOO_LONG, f"a tag is over {MAX_TAG_BYTES} bytes")
            named.append(tag)
    if len(named) > MAX_TAGS:
        raise Refusal(TOO_MANY_TAGS, f"more than {MAX_TAGS} tags in the push condition")
    if len(tags) == 2 and set(value["TagsAnd"]) & set(value["TagsOr"]):
        raise Refusal(TAG_IN_BOTH, "TagsOr and TagsAnd have a tag in common")
    for key in ATTR_KEYS:
        if key in value and not isinstance(value[key], dict):
            raise Refusal(JSON_ERROR, f"{key} must be an object")
    return value


def selected(
    condition: Mapping[str, Any], tags: Mapping[str, Iterable[str]], attrs: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """The users a Condition selects, of those with tags or attributes."""
    users = sorted({*tags, *attrs})
    out = []
    for user in users:
        have = set(tags.get(user, ()))
        mine = attrs.get(user, {})
        ok = True
        if "TagsAnd" in condition:
            ok = ok and set(condition["TagsAnd"]) <= have
        if "TagsOr" in condition:
            ok = ok and bool(set(condition["TagsOr"]) & have)
        if "AttrsAnd" in condition:
            ok = ok and all(mine.get(k) == v for k, v in condition["AttrsAnd"].items())
        if "AttrsOr" in condition:
            ok = ok and any(mine.get(k) == v for k, v in condition["AttrsOr"].items())
        if ok:
            out.append(user)
    return out


class TimPushPushEmulator(Emulator):
    api = TimPushPush
    json_error_code = JSON_ERROR
    rate: ClassVar[int | None] = None  # its limits are 90024 and 90047, checked here, not 60007

    def __init__(self) -> None:
        self.tasks = 0
        self._pushed: collections.deque[float] = collections.deque()  # when each push of the last day was taken

    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
        not_enabled(box)
        content = check_push(body, BODY_KEYS)
        if len(orjson.dumps(body)) > MAX_BODY_BYTES:
            raise Refusal(BODY_TOO_LARGE, f"the push is over {MAX_BODY_BYTES} bytes")
        condition = _check_condition(body["Condition"]) if "Condition" in body else None
        random = body["MsgRandom"]

        def deliver(now: float) -> dict[str, Any]:
            pushed = self._pushed
            while pushed and pushed[0] <= now - DAY:
                pushed.popleft()
            if pushed and now - pushed[-1] <= 1.0:
                raise Refusal(TOO_SOON, "pushes must be more than 1 s apart")
            if len(pushed) >= box.push_daily_limit:
                raise Refusal(OVER_THE_DAY, f"over the day's {box.push_daily_limit} pushes")
            pushed.append(now)
            self.tasks += 1
            if condition is None:
                users: Iterable[str] = sorted(box.accounts) if box.accounts is not None else (ALL_MEMBERS,)
            else:
                users = selected(condition, box.push_tags, box.push_attrs)
            box.ledger.add(PUSH, None, content, users)
            box.stats["pushes_to_all_or_tags"] += 1
            return {"TaskId": f"push_{self.tasks:08x}_{random:08x}"}

        return deliver

    def stats(self) -> dict[str, int]:
        return {"push_all_tasks": self.tasks} if self.tasks else {}
