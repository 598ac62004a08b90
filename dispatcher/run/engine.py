"""The send engine: jobs -> batches -> bounded queue -> worker pool -> outcome journal.

One producer reads and validates jobs (in a thread, so a million-line export does not stall the
event loop) and feeds batches into a bounded queue; `concurrency` workers take a batch each, wait
for a start slot from the rate limiter, send, classify the reply and write one outcome line per
request. Stopping is cooperative: a first signal (or a configuration error, a journal that cannot
be written, an endpoint that does not answer) stops the producer and the idle workers, while
requests in flight finish and are recorded; a second signal, or the end of the grace period,
cancels everything at once.

Invariants:
- Nothing awaits between a reply and its journal line, so a reply is on record before anything
  else can happen (a stop, a crash of another task).
  What a reply means is decided by `decide` (pure); `Engine._handle` acts on it in one step.
- Outages never use up the batches' attempts (`health`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

import structlog

from dispatcher.errors import DispatcherError, InputError, JournalWriteError, RateStoreError, UsageError
from dispatcher.jobs.reader import STDIN, Job, Rejection, api_of, read_jobs, shown
from dispatcher.journal.outcomes import FAILED, OK, REJECTED, Journal, JournalState, Moved, open_journal, record
from dispatcher.observe.events import (
    BatchSkipped,
    Bus,
    Halted,
    JobAccepted,
    JobRejected,
    JobsCutShort,
    RateWaited,
    ReplyRecorded,
    StopRequested,
    Subscriber,
)
from dispatcher.observe.runlog import RunLog
from dispatcher.observe.summary import Summary
from dispatcher.pacing.group import GroupPacer
from dispatcher.pacing.memory import Clock, RateLimiter, frozen_heap
from dispatcher.pacing.store import Limiter, quota_of
from dispatcher.run.batching import Batch, split
from dispatcher.run.client import Client, Reply, new_session
from dispatcher.run.decide import Decision, Sent, decide
from dispatcher.run.health import Health
from dispatcher.run.retry import RetryPolicy
from dispatcher.threads import in_daemon_thread
from dispatcher.tim import rules
from dispatcher.tim.apis import Endpoint
from dispatcher.tim.config import DEFAULT_TIMEOUT, Credentials
from dispatcher.tim.usersig import Signer

log = structlog.get_logger("dispatcher")
Sleep = Callable[[float], Awaitable[None]]
# The limiter of one API, opened when the run first sends with it: budgets are per app and API path.
LimiterFactory = Callable[[Endpoint], AbstractAsyncContextManager[Limiter]]

# How many jobs, or named recipients, the reader thread hands over at once.
_CHUNK_JOBS = 256
_CHUNK_RECIPIENTS = 20_000
# The longest the producer holds the event loop while it splits and queues batches (see _admit).
# A run's first requests open connections, which takes several turns of the loop, and the producer
# gets a slice in each: 1 ms slices still held the first request 10 ms from its slot to its write,
# 0.2 ms slices 3 ms; yielding after every batch cost a fifth of the unthrottled throughput.
_PRODUCER_SLICE = 0.0002

MAX_CONCURRENCY = 10_000  # tasks and connections; beyond this a run only spends memory


# Descriptors a run needs besides one a connection: the journal, exports, their copies, stdio, DNS.
RESERVED_FILES = 64


def reserve_open_files(needed: int) -> None:
    """Make sure the process may open `needed` files, raising its soft limit toward the hard one.

    A run out of descriptors cannot start the thread that syncs its journal, nor open a connection,
    and every request then looks like an unreachable endpoint. Better refuse at once, naming why.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise UsageError(
            f"--concurrency needs about {needed} open files and this process may open {hard} (ulimit -n); "
            "lower --concurrency or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def default_concurrency(rate: float) -> int:
    """Enough requests in flight to hold `rate` at 500 ms latency (the API answers in ~350 ms),
    within [8, 512]: past that, more workers cost memory and buy nothing."""
    return min(512, max(8, math.ceil(rate / 2)))


def check_options(
    *,
    batch_size: int,
    rate: float,
    concurrency: int | None,
    max_attempts: int,
    timeout: float,
    resume: bool,
    retry_failed: bool,
    message_quota: int = rules.DEFAULT_MESSAGE_QUOTA,
) -> None:
    """The run's options, checked in one place for the CLI (before credentials) and RunConfig alike."""
    if not 1 <= batch_size <= rules.MAX_MEMBERS:
        raise UsageError(f"--batch-size must be between 1 and {rules.MAX_MEMBERS}")
    if message_quota < batch_size:  # a quota of 200 a minute (a trial edition, say) works with --batch-size 200
        raise UsageError(
            f"--message-quota must be at least --batch-size ({batch_size}): one full batch of batchsendmsg"
        )
    if not (math.isfinite(rate) and rate > 0):
        raise UsageError("--rate must be a positive number")
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    if max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError("--timeout must be a positive number of seconds")
    if retry_failed and not resume:
        raise UsageError("--retry-failed needs --resume (it re-drives the failed batches of a journal)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    jobs: tuple[str, ...]
    out: Path
    endpoint: str
    credentials: Credentials
    resume: bool = False
    retry_failed: bool = False
    rate: float = rules.DEFAULT_RATE
    concurrency: int | None = None
    batch_size: int = rules.MAX_MEMBERS
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    timeout: float = DEFAULT_TIMEOUT  # seconds for one request
    grace: float = 30.0  # seconds in-flight requests get to finish after a stop signal
    message_quota: int = rules.DEFAULT_MESSAGE_QUOTA  # batchsendmsg: messages a minute, counted per recipient

    def __post_init__(self) -> None:
        check_options(
            batch_size=self.batch_size,
            rate=self.rate,
            concurrency=self.concurrency,
            max_attempts=self.policy.max_attempts,
            timeout=self.timeout,
            resume=self.resume,
            retry_failed=self.retry_failed,
            message_quota=self.message_quota,
        )


class _Worker:
    __slots__ = ("sending", "task")

    def __init__(self) -> None:
        self.sending = False  # a request is on the wire: let it finish on a graceful stop
        self.task: asyncio.Task[None] | None = None


def check_readable(paths: tuple[str, ...]) -> None:
    """Refuse a run whose jobs files cannot be read, before anything is sent.

    Nothing is opened here: opening a FIFO blocks until a writer comes, and opening and closing it
    would hand the writer a SIGPIPE. The reader opens each input once, when it gets to it.
    """
    for path in paths:
        if path == STDIN:
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: cannot read: Is a directory")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: cannot read: Permission denied")


def check_not_journal(paths: tuple[str, ...], journal: Journal) -> None:
    """Refuse jobs that are the journal itself under another name (a link, standard input fed from
    it): the run would read its own outcome lines back as jobs, without end."""
    for path in paths:
        try:
            st = os.fstat(0) if path == STDIN else os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == journal.identity:
            raise UsageError(f"{path} is the outcome journal {journal.path}, not a jobs file; leave it out of the jobs")


def is_stream(path: str) -> bool:
    """True for input that can be read only once: standard input, a pipe, a FIFO, a device."""
    if path == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _take(items: Iterator[Job | Rejection]) -> list[Job | Rejection]:
    """The next few jobs, bounded by count and by named recipients (runs in the reader thread)."""
    out: list[Job | Rejection] = []
    recipients = 0
    for item in items:
        out.append(item)
        if isinstance(item, Job):
            recipients += item.recipient_count
        if len(out) >= _CHUNK_JOBS or recipients >= _CHUNK_RECIPIENTS:
            break
    return out


class Engine:
    """One run. Build it, `await run()`, read the Summary; call `stop()` from a signal handler."""

    def __init__(
        self,
        config: RunConfig,
        *,
        subscribers: Iterable[Subscriber] = (),
        limiter: Limiter | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        signer: Signer | None = None,
        journal: Journal | None = None,
        limiters: LimiterFactory | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`journal`: one the caller opened already (`outcomes.open_journal`), to hold its lock from
        before a pre-scan; the engine writes it and closes it at the end of `run()`. `subscribers`
        hear every event of the run (dispatcher.observe.events) after the summary and the run log do.

        `limiters` opens each API's limiter the first time the run sends with it (a budget is per
        app and API path); `limiter`, one limiter for every API, which then counts calls only. With
        neither, each API gets an in-process limiter (batchsendmsg's with its per-minute quota).
        `clock` and `sleep` pace the messages into one group (send_group_msg), in virtual time in tests."""
        self.config = config
        self.summary = Summary(out=shown(config.out))
        # One stream of events feeds every output; the summary and the run log are always there.
        self._bus = Bus([self.summary.on_event, RunLog(), *subscribers], on_error=self._output_failed)
        self._emit = self._bus.emit
        self.limiter: Limiter | None = limiter
        self._limiter_factory = limiters
        self._limiters: dict[str, Limiter] = {}  # API path -> its limiter, once opened
        self._limiter_stack = AsyncExitStack()
        self._limiter_lock = asyncio.Lock()
        self._paused_until = 0.0  # monotonic time until which every start is held
        self._sleep = sleep
        self._group_pacer = GroupPacer(clock, sleep)
        self._rng = rng or random.Random()
        creds = config.credentials
        self.signer = signer or Signer(creds.sdkappid, creds.identifier, creds.secret_key, creds.usersig)
        self.concurrency = config.concurrency or default_concurrency(config.rate)
        self._journal = journal
        self.state = JournalState() if journal is None else journal.state
        self._workers: list[_Worker] = []
        self._producer: asyncio.Task[None] | None = None
        self._stopping = False
        self._reading_stopped = threading.Event()  # tells the reader thread to give up
        self._hard_stop: asyncio.TimerHandle | None = None
        self._halt_reasons: set[str] = set()
        self._interrupted = False
        self._first_start = 0.0
        self._last_start = 0.0
        self._health = Health(config.endpoint)  # what the endpoint has done so far
        self._told_export: set[str] = set()  # jobs whose export stats are on a line of this run

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """First call: stop gracefully (in-flight requests finish and are recorded). Second: at once."""
        if self._interrupted:
            self._emit(StopRequested(at_once=True, grace_s=self.config.grace))
            self._cancel_all()
            return
        self._interrupted = True
        self._emit(StopRequested(at_once=False, grace_s=self.config.grace))
        self._begin_stop()
        self._hard_stop = asyncio.get_running_loop().call_later(self.config.grace, self._cancel_all)

    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._reading_stopped.set()
        if self._producer is not None:
            self._producer.cancel()
        for worker in self._workers:
            if not worker.sending and worker.task is not None:
                worker.task.cancel()

    def _cancel_all(self) -> None:
        self._begin_stop()
        for worker in self._workers:
            if worker.task is not None:
                worker.task.cancel()

    def _output_failed(self, subscriber: Subscriber, exc: Exception) -> None:
        """A subscriber raised (a bug in an output): stop as for any internal error, so that the
        workers are not cancelled with replies in flight, and those replies are still recorded."""
        name = getattr(subscriber, "__qualname__", type(subscriber).__qualname__)
        log.error("internal error in an output of the run", subscriber=name, error=f"{type(exc).__name__}: {exc}")
        self._halt(f"internal error in an output of the run ({name}): {type(exc).__name__}: {exc}")

    def halt(self, reason: str) -> None:
        """Stop early for a cause outside the engine (an output of the run that cannot be written)."""
        self._halt(reason)

    def _halt(self, reason: str) -> None:
        """Stop early for a cause that will fail every request alike; unfinished work stays resumable."""
        if reason not in self._halt_reasons:  # a second cause is news too (say, the journal as well)
            self._emit(Halted(reason, first=not self._halt_reasons))
            self._halt_reasons.add(reason)
        self._begin_stop()

    # -- limiters ------------------------------------------------------------------------------

    async def _limiter_for(self, endpoint: Endpoint) -> Limiter:
        if self.limiter is not None:
            return self.limiter
        found = self._limiters.get(endpoint.path)
        if found is not None:
            return found
        async with self._limiter_lock:  # one opening per API, however many workers ask at once
            found = self._limiters.get(endpoint.path)
            if found is None:
                if self._limiter_factory is not None:
                    found = await self._limiter_stack.enter_async_context(self._limiter_factory(endpoint))
                else:
                    found = default_limiter(self.config, endpoint)
                held = self._paused_until - time.monotonic()
                if held > 0:  # a pause (70050, Retry-After) from before this API's first request holds it too
                    found.pause(held)
                self._limiters[endpoint.path] = found
            return found

    def _counts_quota(self, endpoint: Endpoint) -> bool:
        """Whether a request's recipients are a cost to its limiter (not with one shared `limiter`)."""
        return endpoint.quota_seconds is not None and self.limiter is None

    def _pause(self, seconds: float) -> None:
        """Hold every API's starts (70050 is about our signatures; Retry-After about the server)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        for limiter in [self.limiter] if self.limiter is not None else self._limiters.values():
            limiter.pause(seconds)

    # -- the run -------------------------------------------------------------------------------

    def _write(self, doc: dict[str, object]) -> bool:
        """Append one journal line; on a write error, halt the run. True if the line was written."""
        assert self._journal is not None
        try:
            self._journal.write(doc)
        except JournalWriteError as exc:
            self._halt(str(exc))
            return False
        return True

    async def run(self) -> Summary:
        started = time.monotonic()
        try:
            check_readable(self.config.jobs)
            reserve_open_files(self.concurrency + RESERVED_FILES)
            if self._journal is None:
                self._journal = open_journal(self.config.out, resume=self.config.resume)
                self.state = self._journal.state
            check_not_journal(self.config.jobs, self._journal)
        except BaseException:
            if self._journal is not None:
                self._journal.close()
            raise
        syncer = asyncio.create_task(self._journal.sync_periodically(lambda exc: self._halt(str(exc)), self._moved))
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        try:
            async with frozen_heap(), new_session(self.concurrency, self.config.timeout) as session:
                client = Client(
                    session,
                    self.config.endpoint,
                    self.config.credentials.sdkappid,
                    self.config.credentials.identifier,
                    self.signer,
                )
                async with asyncio.TaskGroup() as group:
                    self._producer = group.create_task(self._produce(queue))
                    for _ in range(self.concurrency):
                        worker = _Worker()
                        worker.task = group.create_task(self._work(worker, queue, client))
                        self._workers.append(worker)
        finally:
            self._reading_stopped.set()
            if self._hard_stop is not None:
                self._hard_stop.cancel()
            syncer.cancel()
            try:
                await self._limiter_stack.aclose()
            except Exception as exc:  # closing a store's connection is not worth a traceback
                log.warning("closing a rate limiter failed", error=str(exc))
            try:
                self._keep_journal_path()  # a deletion since the last round is restored before the end
            except JournalWriteError as exc:
                self._halt(str(exc))
            try:
                self._journal.close()
            except JournalWriteError as exc:
                self._halt(str(exc))
        self.summary.elapsed_s = time.monotonic() - started
        self.summary.sending_s = max(0.0, self._last_start - self._first_start)
        self.summary.exit_code = self.summary.decide_exit_code()
        return self.summary

    def _keep_journal_path(self) -> None:
        assert self._journal is not None
        moved = self._journal.keep_path()
        if moved is not None:
            self._moved(moved)

    def _moved(self, moved: Moved) -> None:
        """The journal's path was found not to name it any more (Journal.keep_path did what it could)."""
        if moved.stop:
            self._halt(moved.message)
        else:
            log.warning(moved.message)

    async def _produce(self, queue: asyncio.Queue[Batch | None]) -> None:
        loop = asyncio.get_running_loop()

        def cut_short(path: str, read: int, size: int) -> None:  # in the reader thread
            loop.call_soon_threadsafe(self._emit, JobsCutShort(path, read, size))

        jobs = read_jobs(self.config.jobs, self.config.batch_size, stop=self._reading_stopped, on_cut=cut_short)
        items = iter(jobs)
        try:
            while chunk := await in_daemon_thread(lambda: _take(items)):
                for item in chunk:
                    if self._stopping:
                        return
                    await self._admit(item, queue)
        except InputError as exc:  # a jobs file became unreadable during the run
            self._halt(f"cannot read the jobs: {exc}")
        except Exception as exc:  # a bug: halt, so that the requests in flight are still recorded
            log.exception("internal error while reading the jobs")
            self._halt(f"internal error while reading the jobs: {type(exc).__name__}: {exc}")
        finally:
            if not self._stopping:
                for _ in range(self.concurrency):
                    await queue.put(None)

    async def _admit(self, item: Job | Rejection, queue: asyncio.Queue[Batch | None]) -> None:
        if isinstance(item, Rejection):
            self._reject(item.job_id, item.group_id, item.message, item.api, source=item.source, field=item.field)
            return
        conflict = self.state.conflict(item.job_id, item.job_hash, item.derived_id)
        if conflict is not None:
            message = f"{item.source}: {conflict}"
            self._reject(item.job_id, item.group_id, message, api_of(item), source=item.source, field=None)
            return
        self._emit(JobAccepted(item.job_id, item.batches, item.duplicates, item.excluded))
        yield_at = time.monotonic() + _PRODUCER_SLICE
        try:
            for batch in split(item):
                if self.state.should_skip(item.job_id, batch.index, self.config.retry_failed):
                    failed = self.state.fate(item.job_id, batch.index) == FAILED
                    self._emit(BatchSkipped(item.job_id, batch.index, failed))
                else:
                    await queue.put(batch)  # suspends only when the queue is full
                    if time.monotonic() > yield_at:
                        # Let the loop run: splitting a queue's worth of an export at once held it
                        # 9-23 ms, which a request between its slot and its socket write waited out.
                        await asyncio.sleep(0)
                        yield_at = time.monotonic() + _PRODUCER_SLICE
        except InputError as exc:  # the temporary copy of its export failed: some batches may be out
            self._halt(str(exc))

    def _reject(self, job_id: str, group_id: str | None, message: str, api_name: str | None, **extra: object) -> None:
        if api_name is not None:  # rejections of notifications keep the keys they always had
            extra["api"] = api_name
        written = self._write(
            record(
                job_id=job_id,
                batch=None,
                batches=None,
                attempt=0,
                status=REJECTED,
                final=True,
                group_id=group_id,
                recipients=None,
                error_code=None,
                error_info=message,
                http_status=None,
                latency_ms=None,
                job_hash=None,
                **extra,
            )
        )
        self._emit(JobRejected(job_id, message, recorded=written))

    async def _work(self, worker: _Worker, queue: asyncio.Queue[Batch | None], client: Client) -> None:
        while not self._stopping:
            batch = await queue.get()
            if batch is None:
                return
            await self._deliver(worker, batch, client)

    async def _deliver(self, worker: _Worker, batch: Batch, client: Client) -> None:
        policy = self.config.policy
        endpoint = batch.job.endpoint
        try:
            limiter = await self._limiter_for(endpoint)
        except DispatcherError as exc:  # a budget that cannot be had (unreachable, another rate): stay resumable
            self._halt(str(exc))
            return
        job_id = batch.job.job_id
        first_attempt = self.state.last_attempt(job_id, batch.index) + 1
        # What a partial reply left of the batch: the recipients to send, and those failed for good.
        left = self.state.undelivered(job_id, batch.index, self.config.retry_failed)
        pending: tuple[str, ...] | None = batch.recipients
        lost: Mapping[str, int | None] = {}
        if left is not None:
            pending, lost = left
        first_number = 0  # the number of this batch's first request, once it starts
        for n in range(1, policy.max_attempts + 1):
            body = batch.body(pending)  # before the slot: nothing may hold a request between slot and write
            cost = len(pending) if pending and self._counts_quota(endpoint) else 1
            asked = time.monotonic()
            if endpoint.group_rate is not None and batch.job.group_id is not None:
                # Before the API's slot, so that nothing waits between that slot and the request.
                await self._group_pacer.acquire(batch.job.group_id, endpoint.group_rate)
            try:
                await limiter.acquire(cost)
            except RateStoreError as exc:  # the shared budget is lost: start nothing more, stay resumable
                self._halt(str(exc))
                return
            self._emit(RateWaited(time.monotonic() - asked))
            if self._stopping:
                return  # left pending: its last line, if any, is not final
            worker.sending = True
            try:
                self._last_start = time.monotonic()
                if not self._first_start:
                    self._first_start = self._last_start
                number = self._health.start()
                first_number = first_number or number
                reply = await client.send(body, endpoint)
            finally:
                worker.sending = False
            sent = Sent(pending, lost)
            decision = self._handle(batch, first_attempt + n - 1, n, reply, number, first_number, sent)
            if decision is None or self._stopping:
                return
            pending, lost = decision.pending, decision.lost
            if decision.backoff:
                await self._sleep(policy.backoff(n, self._rng))
            # A renewal retries at once; a pause (70050, Retry-After) waits in the limiter, with every other worker.

    def _handle(
        self, batch: Batch, attempt: int, n: int, reply: Reply, number: int, first_number: int, sent: Sent
    ) -> Decision | None:
        """Record one reply and act on it; the decision if the batch is to be sent again, else None.

        `number` is this request's place among the run's requests, `first_number` that of the
        batch's first attempt in this run; `sent` what this request sent.

        Invariant: nothing here awaits. The reply's journal line is written, and its event
        emitted, in the same step of the event loop that received the reply, so a reply is on
        record before anything else can happen (a stop, a crash of another task)."""
        endpoint = batch.job.endpoint
        verdict = endpoint.classify(reply.error_code, reply.http_status, reply.details)
        last = n >= self.config.policy.max_attempts
        outage = self._health.observe(reply, verdict is rules.Verdict.RETRY, number, first_number, last)
        decision = decide(
            reply,
            verdict,
            endpoint,
            sent,
            batch_recipients=len(batch.recipients or ()),
            last=last,
            can_renew=self.signer.can_renew,
            policy=self.config.policy,
            target=self.config.endpoint,
            outage=outage,
        )
        if decision.renew:
            self.signer.renew()
        if decision.pause:
            self._pause(decision.pause)
            if decision.signature_pause:
                log.warning("signature checks rate-limited (70050): pausing all sending", seconds=decision.pause)
        job = batch.job
        extra = decision.extra
        if job.export is not None and job.job_id not in self._told_export:
            # The first line of a job read from an export, in each run, says what was read (for the report).
            self._told_export.add(job.job_id)
            extra = {**extra, "export": job.export.to_json()}
        written = self._write(
            record(
                job_id=job.job_id,
                batch=batch.index,
                batches=job.batches,
                attempt=attempt,
                status=decision.status,
                final=decision.status in (OK, FAILED),
                group_id=job.group_id,
                recipients=sent.recipients,
                error_code=reply.error_code,
                error_info=reply.error_info,
                http_status=reply.http_status,
                latency_ms=reply.latency_ms,
                job_hash=job.job_hash,
                **extra,
            )
        )
        self._emit(
            ReplyRecorded(
                api=endpoint.name,
                job_id=job.job_id,
                batch=batch.index,
                retry=n > 1,
                code=decision.code,
                error_info=reply.error_info or reply.details.dropped,
                verdict=verdict.value,
                status=decision.status,
                recipients=len(batch.recipients or ()),
                latency_s=None if reply.latency_ms is None else reply.latency_ms / 1000,
                recorded=written,
                delivered=decision.delivered,
                undelivered=decision.undelivered,
            )
        )
        if decision.halt is not None:
            self._halt(decision.halt)
        if not written:
            return None  # not on record, so not done: a resume sends it again
        return decision if decision.again else None


def default_limiter(config: RunConfig, endpoint: Endpoint) -> Limiter:
    """An in-process limiter for one API: the call rate, and batchsendmsg's per-minute message quota."""
    return RateLimiter(config.rate, quota=quota_of(endpoint, config.message_quota))
