"""What happens during a run, one typed event per thing, and the one place outputs subscribe to it.

The engine says what happened (a job accepted or rejected, a batch skipped, a reply recorded, a wait
for a rate slot, the pace stepped down, a stop) and does not know who listens: the summary counts,
the progress display draws, the run log warns, the metrics export. So they count the same things,
and a new output is a new subscriber, not another hook in the engine.

Subscribers are plain functions called at once, in order, on the event loop: they must not await
or block, which keeps the engine's rule that nothing awaits between a reply and its journal line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from dispatcher.core.status import FINAL


@dataclasses.dataclass(frozen=True, slots=True)
class JobAccepted:
    """A job passed validation; its batches are now the run's (some may be skipped). `duplicates` and
    `excluded`: named recipients left out as a repeat of an earlier one, or as in its exclude_file."""

    job_id: str
    batches: int
    duplicates: int = 0
    excluded: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class JobRejected:
    """A job was refused (invalid, or changed since the journal was written); nothing of it is sent.
    `recorded`: its `rejected` line is in the journal (False when the journal could not be written)."""

    job_id: str
    reason: str
    recorded: bool = True
    exit_code: int = 1  # 2: what it names could not be read (an object store): the run exits 2


@dataclasses.dataclass(frozen=True, slots=True)
class BatchClaimed:
    """A batch of a run shared through PostgreSQL, claimed by this worker to be sent (its `batches`)."""

    job_id: str
    batch: int


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimLost:
    """A claimed batch this worker gave up: its claim ran out before a request could start, or the
    database refused its line (another worker took the batch over). `status` and `delivered` are
    what this worker's refused line had counted, if any: the batch is the other worker's now."""

    job_id: str
    batch: int
    status: str | None = None
    delivered: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class BatchSkipped:
    """A batch already final in the journal, not sent again (resume); `failed` if that fate is failed."""

    job_id: str
    batch: int
    failed: bool
    unknown: bool = False  # its fate is unknown: a push whose reply never came (resumed without --retry-unknown)


@dataclasses.dataclass(frozen=True, slots=True)
class RateWaited:
    """A worker waited this long for a start slot from the rate limiter of `api`, whose pace for
    that slot was `pace` requests a second (None: not known); `messages`: the units it took of the
    API's message quota, if the API has one."""

    seconds: float
    api: str = ""
    pace: float | None = None
    messages: int = 0  # what the request counts against its API's message quota (batchsendmsg's recipients)


@dataclasses.dataclass(frozen=True, slots=True)
class PaceStepped:
    """A reply said "too frequent" and the pace of `api` stepped down to `pace` requests a second."""

    api: str
    pace: float
    code: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyRecorded:
    """One request came back (or failed in transport) and its journal line was written.

    `status` is the line's: ok, retry or failed (ok and failed are a batch's final fate). `retry`:
    the request was not the batch's first attempt in this run. `recorded` is False when the journal
    line could not be written: the request happened, the batch is not done."""

    api: str
    job_id: str
    batch: int
    retry: bool
    code: str
    error_info: str
    verdict: str
    status: str
    recipients: int  # named recipients of the batch; 0 for an all-members batch
    latency_s: float | None
    recorded: bool = True
    # Named recipients this request delivered to (a batch that ended ok: all of them; a batchsendmsg
    # reply: all but those its ErrorList names), and, on a line that ends the batch failed, those of
    # the batch left undelivered for good.
    delivered: int = 0
    undelivered: int = 0

    @property
    def final(self) -> bool:
        return self.recorded and self.status in FINAL


@dataclasses.dataclass(frozen=True, slots=True)
class Halted:
    """The run stops early for a cause that would fail every request alike; `first` for the first cause."""

    reason: str
    first: bool


@dataclasses.dataclass(frozen=True, slots=True)
class StopRequested:
    """A signal asked the run to stop: gracefully the first time (`at_once` False), at once the second."""

    at_once: bool
    grace_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class JobsCutShort:
    """A jobs file became shorter while the run read it (cut in place): the jobs after the cut were
    never read, and nothing of them is on record."""

    path: str
    read_bytes: int
    bytes_at_open: int


@dataclasses.dataclass(frozen=True, slots=True)
class DomainSwitched:
    """The run's requests moved to another domain of the endpoint: to its backup (`to` "backup"), since
    a connection to the main domain could not be made, or back to the main one once it was reachable."""

    to: str
    url: str
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class JobsRead:
    """The run read `rows` more rows of its jobs: lines of a jobs file, rows of an export. A big
    export is read whole before any of it is sent: this is what the run is doing meanwhile."""

    rows: int


@dataclasses.dataclass(frozen=True, slots=True)
class RequestUnanswered:
    """A stop at once (a second signal, or the end of the grace period) cancelled this request in
    flight: its reply is never awaited and nothing of it is recorded, so its batch stays pending and
    a resume sends it again, although the server may have delivered it. `recipients`: the named
    recipients it sent to (None: all members of the group, or a group message)."""

    api: str
    job_id: str
    batch: int
    recipients: int | None


Event = (
    JobAccepted
    | JobRejected
    | BatchSkipped
    | BatchClaimed
    | ClaimLost
    | RateWaited
    | PaceStepped
    | ReplyRecorded
    | Halted
    | StopRequested
    | JobsCutShort
    | DomainSwitched
    | JobsRead
    | RequestUnanswered
)
Subscriber = Callable[[Event], None]


class Bus:
    """Hands each event to every subscriber, in the order they subscribed.

    A subscriber that raises is a bug in an output, not in the run: with `on_error`, it is dropped
    (it hears no more events) and `on_error` is told, so that the run can stop gracefully with
    every request in flight still recorded. Without it, the exception propagates."""

    __slots__ = ("_on_error", "_subscribers")

    def __init__(
        self,
        subscribers: Iterable[Subscriber] = (),
        on_error: Callable[[Subscriber, Exception], None] | None = None,
    ) -> None:
        self._subscribers = tuple(subscribers)
        self._on_error = on_error

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers = (*self._subscribers, subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception as exc:
                if self._on_error is None:
                    raise
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
                self._on_error(subscriber, exc)
