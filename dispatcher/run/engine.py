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
  With a journal in PostgreSQL the worker then awaits `settle()`, before anything more of that reply
  happens (another attempt, a pace step, its next batch): the line is in the database first.
- With a journal in PostgreSQL a request starts only on a batch whose claim this worker holds.
- Outages never use up the batches' attempts (`health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

import structlog

from dispatcher.core.batch import Batch, split
from dispatcher.core.job import Job
from dispatcher.core.record import record
from dispatcher.core.state import JournalState
from dispatcher.core.status import FAILED, OK, REJECTED, code_key
from dispatcher.errors import DispatcherError, InputError, JournalWriteError, RateStoreError, UsageError
from dispatcher.jobs.reader import Rejection, api_of, read_jobs, shown
from dispatcher.journal.outcomes import Moved, open_journal
from dispatcher.journal.store import JournalStore, shared_of
from dispatcher.journal.uri import JournalURI
from dispatcher.observe.events import (
    BatchClaimed,
    BatchSkipped,
    Bus,
    ClaimLost,
    Halted,
    JobAccepted,
    JobRejected,
    JobsCutShort,
    PaceStepped,
    RateWaited,
    ReplyRecorded,
    StopRequested,
    Subscriber,
)
from dispatcher.observe.runlog import RunLog
from dispatcher.observe.summary import Summary
from dispatcher.pacing.base import Clock, Limiter
from dispatcher.pacing.budgets import Budgets
from dispatcher.pacing.group import GroupPacer
from dispatcher.pacing.memory import frozen_heap
from dispatcher.run import shared
from dispatcher.run.client import Client, Reply
from dispatcher.run.config import RunConfig
from dispatcher.run.decide import Decision, Sent, SignatureUse, decide
from dispatcher.run.health import Health
from dispatcher.run.preflight import (
    RESERVED_FILES,
    check_not_journal,
    check_readable,
    default_concurrency,
    reserve_open_files,
)
from dispatcher.threads import in_daemon_thread
from dispatcher.tim import rules
from dispatcher.tim.usersig import Signer

log = structlog.get_logger("dispatcher")
Sleep = Callable[[float], Awaitable[None]]
# The limiter of one API, opened when the run first sends with it: budgets are per app and API path.

# How many jobs, or named recipients, the reader thread hands over at once.
_CHUNK_JOBS = 256
_CHUNK_RECIPIENTS = 20_000
# The longest the producer holds the event loop while it splits and queues batches (see _admit).
# A run's first requests open connections, which takes several turns of the loop, and the producer
# gets a slice in each: 1 ms slices still held the first request 10 ms from its slot to its write,
# 0.2 ms slices 3 ms; yielding after every batch cost a fifth of the unthrottled throughput.
_PRODUCER_SLICE = 0.0002
# What a shared journal's close gets after a stop signal: a healthy database takes the last lines and
# claims in milliseconds; one that stopped answering must not hold the run past the 2 s promised.
STOPPED_CLOSE_S = 1.0


class _Worker:
    __slots__ = ("sending", "task")

    def __init__(self) -> None:
        self.sending = False  # a request is on the wire: let it finish on a graceful stop
        self.task: asyncio.Task[None] | None = None


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
        journal: JournalStore | None = None,
        budgets: Budgets | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`journal`: one the caller opened already (`outcomes.open_journal`), to hold its lock from
        before a pre-scan; the engine writes it and closes it at the end of `run()`. `subscribers`
        hear every event of the run (dispatcher.observe.events) after the summary and the run log do.

        `budgets`: the run's limiters, one per API path, which the caller owns (opened before the
        engine, closed after it); without them the engine makes its own, in-process, and closes them
        at the end: each API gets a limiter (batchsendmsg's with its per-minute quota), or `limiter`
        is shared by every API and counts calls only. `clock` and `sleep` time the run's pacing,
        pauses and backoff (in virtual time in tests)."""
        self.config = config
        self.summary = Summary(out=shown(str(config.out)))
        # One stream of events feeds every output; the summary and the run log are always there.
        self._bus = Bus([self.summary.on_event, RunLog(), *subscribers], on_error=self._output_failed)
        self._emit = self._bus.emit
        creds = config.credentials
        self._own_budgets = budgets is None
        self.budgets = budgets or Budgets(
            rate=config.rate,
            sdkappid=creds.sdkappid,
            message_quota=config.message_quota,
            shared=limiter,
            clock=clock,
            sleep=sleep,
        )
        self._clock = clock
        self._sleep = sleep
        self._group_pacer = GroupPacer(clock, sleep)
        self._rng = rng or random.Random()
        self.signer = signer or Signer(creds.sdkappid, creds.identifier, creds.secret_key, creds.usersig)
        self.concurrency = config.concurrency or default_concurrency(config.rate)
        self._journal = journal
        # A journal several workers share (PostgreSQL): the plan is stored there, and batches are claimed.
        self._shared = shared_of(journal)
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
        self._renewed_on_refusal = -1  # the signer's generation made because a UserSig was refused (70001)
        self._signature_accepted = -1  # the newest signer's generation the server took a request signed with
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
        if self._producer is not None:  # again: a step it was cancelled in may still be ending
            self._producer.cancel()
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
        started = self._clock()
        if self._journal is None:
            # Run on its own (not by a Runner, which checked all this before it opened the journal).
            check_readable(self.config.jobs)
            reserve_open_files(self.concurrency + RESERVED_FILES)
            if isinstance(self.config.out, JournalURI):  # it needs the opening and the signals of a Runner
                raise UsageError("an Engine on its own takes a file journal: run a PostgreSQL one with a Runner")
            journal = open_journal(self.config.out, resume=self.config.resume)
            self._journal = journal
            self.state = journal.state
            try:
                check_not_journal(self.config.jobs, journal)
            except BaseException:
                journal.close()
                raise
        syncer = asyncio.create_task(self._journal.sync_periodically(lambda exc: self._halt(str(exc)), self._moved))
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        try:
            client = Client(
                self.config.endpoint,
                self.config.credentials.sdkappid,
                self.config.credentials.identifier,
                self.signer,
                concurrency=self.concurrency,
                timeout=self.config.timeout,
            )
            async with frozen_heap(), contextlib.aclosing(client), asyncio.TaskGroup() as group:
                producing = self._produce(queue) if self._shared is None else self._produce_shared(queue)
                self._producer = group.create_task(producing)
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
                if self._own_budgets:
                    await self.budgets.aclose()
            except Exception as exc:  # closing a store's connection is not worth a traceback
                log.warning("closing a rate limiter failed", error=str(exc))
            if self._halt_reasons or self._interrupted:  # stopped before a line: no empty journal stays
                self._journal.remove_if_unused()
            try:
                await self._keep_journal_path()  # a deletion since the last round is restored before the end
            except JournalWriteError as exc:
                self._halt(str(exc))
            if self._shared is not None:
                if self._interrupted:  # a stop signal ends the run at once: a database gone quiet is not waited for
                    await self._shared.aclose(STOPPED_CLOSE_S)
                else:
                    await self._shared.aclose()
            try:
                self._journal.close()
            except JournalWriteError as exc:
                self._halt(str(exc))
        self.summary.elapsed_s = self._clock() - started
        self.summary.sending_s = max(0.0, self._last_start - self._first_start)
        self.summary.exit_code = self.summary.decide_exit_code()
        return self.summary

    async def _keep_journal_path(self) -> None:
        assert self._journal is not None
        moved = await self._journal.keep_path()
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
        else:
            # Not when cancelled (a worker's bug ends the run): the queue may be full, with no worker left
            # to take from it, and the run would wait on it for good.
            if not self._stopping:
                for _ in range(self.concurrency):
                    await queue.put(None)

    async def _produce_shared(self, queue: asyncio.Queue[Batch | None]) -> None:
        """With a shared journal: store the plan (the send's jobs, if any) while claiming batches for
        this process's workers, as every other worker of the run does (`run.shared`)."""
        assert self._shared is not None
        try:
            async with asyncio.TaskGroup() as group:
                if self.config.jobs and self.config.resume:
                    # A resume checks every job against the stored plan before this process claims a
                    # batch: a job changed since is withdrawn, and none of its old batches go out here.
                    await self._plan()
                elif self.config.jobs:
                    group.create_task(self._plan())
                claimed = lambda batch: self._emit(BatchClaimed(batch.job.job_id, batch.index))  # noqa: E731
                await shared.feed(self._shared, queue, lambda: self._stopping, self._sleep, claimed)
        except Exception as exc:  # a bug: halt, so that the requests in flight are still recorded
            log.exception("internal error while planning or claiming")
            self._halt(f"internal error while planning or claiming: {type(exc).__name__}: {exc}")
        finally:
            if not self._stopping:
                for _ in range(self.concurrency):
                    await queue.put(None)

    async def _plan(self) -> None:
        """Store each job, once validated whole, with its batches, then mark the plan complete.
        A job the plan holds already (a resume) is left as it is; one changed since is rejected."""
        assert self._shared is not None
        items = iter(read_jobs(self.config.jobs, self.config.batch_size, stop=self._reading_stopped))
        try:
            while chunk := await in_daemon_thread(lambda: _take(items)):
                yield_at = time.monotonic() + _PRODUCER_SLICE
                for item in chunk:
                    if self._stopping:
                        return
                    if isinstance(item, Rejection):
                        reason = item.message
                        self._reject(item.job_id, item.group_id, reason, item.api, source=item.source, field=item.field)
                        continue
                    planned = self._shared.planned_hash(item.job_id)
                    conflict = self.state.conflict(item.job_id, item.job_hash, item.derived_id)
                    if conflict is None and planned not in (None, item.job_hash):
                        conflict = (
                            "job changed since the run's plan was stored (content, recipients or --batch-size): "
                            "nothing more of it is sent; its batches not sent yet are withdrawn from the run"
                        )
                    if conflict is not None:
                        if planned is not None:  # no worker may send the old version's batches either
                            await self._shared.withdraw(item.job_id)
                        message = f"{item.source}: {conflict}"
                        self._reject(item.job_id, item.group_id, message, api_of(item), source=item.source, field=None)
                        continue
                    # Its batches count where they are claimed (BatchClaimed), by whichever worker; on a
                    # resume, those final already count as skipped, as with a file (a failed one: exit 1).
                    done = [] if planned is None else self._final_batches(item.job_id)
                    self._emit(JobAccepted(item.job_id, len(done), item.duplicates, item.excluded))
                    for index, failed in done:
                        self._emit(BatchSkipped(item.job_id, index, failed))
                    if planned is None:
                        await self._shared.plan(item, split(item))
                    if time.monotonic() > yield_at:  # as in _admit: the workers' requests go out meanwhile
                        await asyncio.sleep(0)
                        yield_at = time.monotonic() + _PRODUCER_SLICE
                await self._shared.plan_flush()
            if not self._stopping:
                await self._shared.plan_complete()
        except InputError as exc:  # a jobs file became unreadable during the run
            self._halt(f"cannot read the jobs: {exc}")

    def _final_batches(self, job_id: str) -> list[tuple[int, bool]]:
        """The batches of a job that the journal holds as final and this run leaves so: (index, failed).
        A failed one open again in the run's database (--retry-failed) is not: it is sent again."""
        assert self._shared is not None
        record = self.state.jobs.get(job_id)
        if record is None:
            return []
        retry = self.config.retry_failed
        return [
            (i, fate == FAILED)
            for i, (fate, _) in record.batches.items()
            if fate == OK or (fate == FAILED and not retry and not self._shared.reopened(job_id, i))
        ]

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
            limiter = await self.budgets.get(endpoint)
        except DispatcherError as exc:  # a budget that cannot be had (unreachable, another rate): stay resumable
            self._halt(str(exc))
            return
        job_id = batch.job.job_id
        first_attempt = self.state.last_attempt(job_id, batch.index) + 1
        # What a partial reply left of the batch: the recipients to send, and those failed for good.
        # A run in PostgreSQL hands out a failed batch only once a --retry-failed re-opened it, for every
        # worker of the run: each sends its failed recipients again, as the send that asked would.
        retry_failed = self.config.retry_failed or self._shared is not None
        left = self.state.undelivered(job_id, batch.index, retry_failed)
        pending: tuple[str, ...] | None = batch.recipients
        lost: Mapping[str, int | None] = {}
        if left is not None:
            pending, lost = left
        first_number = 0  # the number of this batch's first request, once it starts
        for n in range(1, policy.max_attempts + 1):
            if self._shared is not None and not await self._shared.confirm(job_id, batch.index):
                # Taken away (its job withdrawn on a resume): nothing more of it goes out. Asked before
                # the slot, so that nothing waits between the slot and the request.
                self._emit(ClaimLost(job_id, batch.index))
                return
            body = batch.body(pending)  # before the slot: nothing may hold a request between slot and write
            counts = endpoint.quota_seconds is not None and self.budgets.counts_quota
            cost = len(pending) if pending and counts else 1
            asked = self._clock()
            if endpoint.group_rate is not None and batch.job.group_id is not None:
                # Before the API's slot, so that nothing waits between that slot and the request.
                await self._group_pacer.acquire(batch.job.group_id, endpoint.group_rate)
            try:
                await limiter.acquire(cost)
            except RateStoreError as exc:  # the shared budget is lost: start nothing more, stay resumable
                self._halt(str(exc))
                return
            self._emit(RateWaited(self._clock() - asked, endpoint.name, limiter.pace))
            if self._stopping:
                return  # left pending: its last line, if any, is not final
            if self._shared is not None and not self._shared.holds(job_id, batch.index, self.config.timeout):
                # Its claim may run out before the reply comes: another worker of the run sends it.
                await self._shared.release(job_id, batch.index)
                self._emit(ClaimLost(job_id, batch.index))
                return
            worker.sending = True
            try:
                started = self._last_start = self._clock()
                if not self._first_start:
                    self._first_start = started
                number = self._health.start()
                first_number = first_number or number
                signed = self.signer.generation
                reply = await client.send(body, endpoint)
            finally:
                worker.sending = False
            sent = Sent(pending, lost, signed)
            decision, again = self._handle(batch, first_attempt + n - 1, n, reply, number, first_number, sent)
            if self._shared is not None:
                if self._stopping:  # nothing more of this reply happens: the journal's close commits its line
                    return
                await self._shared.settle()  # the line is in the database before anything more of this reply
                if self._shared.refused(job_id, batch.index):  # the batch was taken over: it is not ours
                    self._emit(ClaimLost(job_id, batch.index, decision.status, decision.delivered))
                    return
            if endpoint.too_frequent(reply.error_code):  # its line is written: the pace may step down now
                pace = await limiter.over_rate(self._clock() - started)
                if pace is not None:
                    self._emit(PaceStepped(endpoint.name, pace, code_key(reply.error_code)))
            if not again or self._stopping:
                return
            pending, lost = decision.pending, decision.lost
            if decision.backoff:
                await self._sleep(policy.backoff(n, self._rng))
            # A renewal retries at once; a pause (70050, Retry-After) waits in the limiter, with every other worker.

    def _handle(
        self, batch: Batch, attempt: int, n: int, reply: Reply, number: int, first_number: int, sent: Sent
    ) -> tuple[Decision, bool]:
        """Record one reply and act on it: the decision, and whether the batch is to be sent again.

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
            signature=SignatureUse(
                current=sent.signed == self.signer.generation,
                made_on_refusal=sent.signed == self._renewed_on_refusal,
                accepted=sent.signed <= self._signature_accepted,
                now=self.signer.now(),
            ),
        )
        if decision.signature_accepted:  # a later UserSig the server took shows the clocks agree as well
            self._signature_accepted = max(self._signature_accepted, sent.signed)
        if decision.renew:  # once for all the requests signed with the refused UserSig, not once for each
            self.signer.renew()
            self._renewed_on_refusal = self.signer.generation
        if decision.pause:
            self.budgets.pause(decision.pause)
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
        # Not on record, so not done: a resume sends it again.
        return decision, written and decision.again
