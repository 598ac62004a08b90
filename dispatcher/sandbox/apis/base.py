"""The seam between the sandbox's server and its emulation of one REST API.

The server (`dispatcher.sandbox.server`) does what all APIs share: the UserSig, the rate windows,
the faults, the body read as a JSON object. Each API's module here checks an admitted request as
the real server does and delivers it, holding that API's state (deduplication, quotas) in typed
fields of its own. An emulation knows its API's client half (`dispatcher.tim.apis`) for the path
and the codes; the client half knows nothing of it.
"""

from __future__ import annotations

import abc
import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

import orjson

from dispatcher.sandbox.groups import Group
from dispatcher.sandbox.ledger import Ledger
from dispatcher.tim import rules
from dispatcher.tim.apis.base import Endpoint, msg_body_problem


class Refusal(Exception):
    """The sandbox's answer to a request it refuses: an ErrorCode, its text, and more reply fields."""

    def __init__(self, code: int, info: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(info)
        self.code = code
        self.info = info
        self.extra = dict(extra or {})


Delivery = Callable[[float], dict[str, Any]]


class Box(Protocol):
    """What an emulation reads and changes of the sandbox that serves it (`server.Sandbox`)."""

    ledger: Ledger
    stats: collections.Counter[str]
    accounts: frozenset[str] | None  # None: every valid UserID exists
    groups: dict[str, Group] | None  # None: every valid GroupId is an open Public group
    message_quota: int
    group_rate: int
    push_enabled: bool  # False: the Push Service is not enabled for the app (90045)
    push_daily_limit: int  # timpush_push's calls a day
    push_tags: dict[str, tuple[str, ...]]  # user -> tags, for a push by tag
    push_attrs: dict[str, dict[str, str]]  # user -> attributes, for a push by attribute

    def group(self, gid: object) -> tuple[str, Group]: ...

    def topic(self, group: Group, topic: object) -> str | None: ...

    def members(self, group: Group, named: list[str] | None) -> Iterable[str]: ...

    def recipient_reply(self, user: str) -> int: ...


class Emulator(abc.ABC):
    """One REST API as the sandbox serves it. Each sandbox makes one of each for itself, so that
    its state is the sandbox's own."""

    api: ClassVar[type[Endpoint]]  # the client half: the path served
    json_error_code: ClassVar[int] = rules.INVALID_PARAMETER  # the answer to a body that is not JSON
    # Calls a second in any one-second window when the API's is its own (the Push Service's edition
    # rate), not the sandbox's `rate`; `Sandbox(api_rates=...)` sets it per API.
    rate: ClassVar[int | None] = None

    @property
    def path(self) -> str:
        """The path served: its API's (a read-only call, which is no job's API, names its own)."""
        return self.api.path

    @abc.abstractmethod
    def emulate(self, box: Box, body: Mapping[str, Any]) -> Delivery:
        """The sandbox's check of an authenticated, admitted request (raise Refusal), returning what
        delivers it: the sandbox calls that after its latency and faults, with the time, and it
        returns the reply's fields besides ErrorCode/ErrorInfo (or raises Refusal)."""

    def stats(self) -> dict[str, int]:
        """Figures of this API's emulation for `GET /sandbox/stats`, besides the counts of replies."""
        return {}


def msg_body(body: Mapping[str, Any], bad_code: int, too_large: int) -> str:
    """The sandbox's check of a MsgBody; the body as the ledger keys it (compact JSON)."""
    value = body.get("MsgBody")
    problem = msg_body_problem(value)
    if problem is not None:
        code = too_large if "bytes" in problem else bad_code
        raise Refusal(code, f"MsgBody {problem}")
    return orjson.dumps(value).decode()


def uint32(body: Mapping[str, Any], key: str, code: int, *, required: bool) -> int | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if type(value) is not int or not 0 <= value <= rules.UINT32_MAX:
        raise Refusal(code, f"{key} must be an unsigned 32-bit integer")
    return value
