"""The send engine: jobs -> batches -> bounded queue -> worker pool -> outcome journal.

One producer reads and validates jobs (in a thread, so a million-line export does not stall the
event loop) and feeds batches into a bounded queue; `concurrency` workers take a batch each, wait
for a start slot from the rate limiter, send, classify the reply and write one outcome line per
request. Stopping is cooperative: a first signal (or a configuration error) stops the producer and
the idle workers, while requests in flight finish and are recorded; a second signal, or the end of
the grace period, cancels everything at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

import structlog

from dispatcher import api
from dispatcher.batching import Batch, split
from dispatcher.client import Client, Reply, new_session
from dispatcher.config import Credentials
from dispatcher.errors import InputError, JournalError, UsageError
from dispatcher.jobs import STDIN, Job, Rejection, read_jobs
from dispatcher.outcomes import FAILED, OK, REJECTED, RETRY, Journal, JournalState, is_nonempty, load_state, record
from dispatcher.ratelimit import RateLimiter, frozen_heap
from dispatcher.retry import RetryPolicy
from dispatcher.summary import Summary
from dispatcher.usersig import Signer

log = structlog.get_logger("dispatcher")
Sleep = Callable[[float], Awaitable[None]]

# How many jobs, or named recipients, the reader thread hands over at once.
_CHUNK_JOBS = 256
_CHUNK_RECIPIENTS = 20_000
# The longest the producer holds the event loop while it splits and queues batches (see _admit).
# A run's first requests open connections, which takes several turns of the loop, and the producer
# gets a slice in each: 1 ms slices still held the first request 10 ms from its slot to its write,
# 0.2 ms slices 3 ms; yielding after every batch cost a fifth of the unthrottled throughput.
_PRODUCER_SLICE = 0.0002


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
) -> None:
    """The run's options, checked in one place for the CLI (before credentials) and RunConfig alike."""
    if not 1 <= batch_size <= api.MAX_MEMBERS:
        raise UsageError(f"--batch-size must be between 1 and {api.MAX_MEMBERS}")
    if rate <= 0:
        raise UsageError("--rate must be positive")
    if concurrency is not None and concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
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
    rate: float = api.DEFAULT_RATE
    concurrency: int | None = None
    batch_size: int = api.MAX_MEMBERS
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    timeout: float = 10.0  # seconds for one request
    grace: float = 30.0  # seconds in-flight requests get to finish after a stop signal

    def __post_init__(self) -> None:
        check_options(
            batch_size=self.batch_size,
            rate=self.rate,
            concurrency=self.concurrency,
            max_attempts=self.policy.max_attempts,
            timeout=self.timeout,
            resume=self.resume,
            retry_failed=self.retry_failed,
        )


class Progress(Protocol):
    def batch_done(self, status: str) -> None: ...
    def request_done(self, retry: bool) -> None: ...


class _NoProgress:
    def batch_done(self, status: str) -> None:
        pass

    def request_done(self, retry: bool) -> None:
        pass


class _Worker:
    __slots__ = ("sending", "task")

    def __init__(self) -> None:
        self.sending = False  # a request is on the wire: let it finish on a graceful stop
        self.task: asyncio.Task[None] | None = None


def check_readable(paths: tuple[str, ...]) -> None:
    """Refuse a run whose jobs files cannot be opened, before anything is sent."""
    for path in paths:
        if path == STDIN:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None


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
        progress: Progress | None = None,
        limiter: RateLimiter | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.config = config
        self.summary = Summary(out=str(config.out))
        self.progress: Progress = progress or _NoProgress()
        self.limiter = limiter or RateLimiter(config.rate)
        self._sleep = sleep
        self._rng = rng or random.Random()
        creds = config.credentials
        self.signer = signer or Signer(creds.sdkappid, creds.identifier, creds.secret_key, creds.usersig)
        self.concurrency = config.concurrency or default_concurrency(config.rate)
        self.state = JournalState()
        self._journal: Journal | None = None
        self._workers: list[_Worker] = []
        self._producer: asyncio.Task[None] | None = None
        self._stopping = False
        self._hard_stop: asyncio.TimerHandle | None = None
        self._seen_codes: set[str] = set()
        self._first_start = 0.0
        self._last_start = 0.0

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """First call: stop gracefully (in-flight requests finish and are recorded). Second: at once."""
        if self.summary.interrupted:
            log.warning("second signal: stopping at once; requests in flight are not recorded")
            self._cancel_all()
            return
        self.summary.interrupted = True
        log.warning("stopping: finishing requests in flight; resume with --resume", grace_s=self.config.grace)
        self._begin_stop()
        self._hard_stop = asyncio.get_running_loop().call_later(self.config.grace, self._cancel_all)

    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
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

    def _config_stop(self, message: str) -> None:
        if self.summary.stopped is None:
            self.summary.stopped = message
            log.error("stopping the run: a configuration error will fail every request", reason=message)
        self._begin_stop()

    # -- the run -------------------------------------------------------------------------------

    def _open_journal(self) -> Journal:
        out = self.config.out
        if is_nonempty(out):
            if not self.config.resume:
                raise JournalError(
                    f"{out} exists and is not empty; pass --resume to continue it, or choose another --out"
                )
            self.state = load_state(out)
        return Journal(out)

    async def run(self) -> Summary:
        started = time.monotonic()
        check_readable(self.config.jobs)
        self._journal = self._open_journal()
        syncer = asyncio.create_task(self._journal.sync_periodically())
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
            if self._hard_stop is not None:
                self._hard_stop.cancel()
            syncer.cancel()
            self._journal.close()
        self.summary.elapsed_s = time.monotonic() - started
        self.summary.sending_s = max(0.0, self._last_start - self._first_start)
        self.summary.exit_code = self.summary.decide_exit_code()
        return self.summary

    async def _produce(self, queue: asyncio.Queue[Batch | None]) -> None:
        items = iter(read_jobs(self.config.jobs, self.config.batch_size))
        try:
            while chunk := await asyncio.to_thread(_take, items):
                for item in chunk:
                    await self._admit(item, queue)
        except InputError as exc:  # a jobs file became unreadable during the run
            self.summary.stopped = str(exc)
            log.error("stopping the run: cannot read the jobs", reason=str(exc))
            self._begin_stop()
        finally:
            if not self._stopping:
                for _ in range(self.concurrency):
                    await queue.put(None)

    async def _admit(self, item: Job | Rejection, queue: asyncio.Queue[Batch | None]) -> None:
        summary = self.summary
        summary.jobs += 1
        if isinstance(item, Rejection):
            self._reject(item.job_id, item.group_id, item.message, source=item.source, field=item.field)
            return
        if self.state.changed(item.job_id, item.job_hash):
            self._reject(
                item.job_id,
                item.group_id,
                f"{item.source}: job changed since the outcome journal was written "
                "(content, recipients or --batch-size); nothing of it was sent",
                source=item.source,
                field=None,
            )
            return
        summary.batches += item.batches
        yield_at = time.monotonic() + _PRODUCER_SLICE
        try:
            for batch in split(item):
                if self.state.should_skip(item.job_id, batch.index, self.config.retry_failed):
                    summary.skipped += 1
                    summary.skipped_failed += self.state.fate(item.job_id, batch.index) == FAILED
                    self.progress.batch_done("skipped")
                else:
                    await queue.put(batch)  # suspends only when the queue is full
                    if time.monotonic() > yield_at:
                        # Let the loop run: splitting a queue's worth of an export at once held it
                        # 9-23 ms, which a request between its slot and its socket write waited out.
                        await asyncio.sleep(0)
                        yield_at = time.monotonic() + _PRODUCER_SLICE
        except InputError as exc:  # its export changed between validation and sending
            summary.batches -= item.batches
            self._reject(item.job_id, item.group_id, str(exc), source=item.source, field="recipients_file")

    def _reject(self, job_id: str, group_id: str | None, message: str, **extra: object) -> None:
        assert self._journal is not None
        self.summary.rejected += 1
        self._journal.write(
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
        log.warning("job rejected", job_id=job_id, reason=message)

    async def _work(self, worker: _Worker, queue: asyncio.Queue[Batch | None], client: Client) -> None:
        while not self._stopping:
            batch = await queue.get()
            if batch is None:
                return
            await self._deliver(worker, batch, client)

    async def _deliver(self, worker: _Worker, batch: Batch, client: Client) -> None:
        policy = self.config.policy
        body = batch.body()
        first_attempt = self.state.last_attempt(batch.job.job_id, batch.index) + 1
        for n in range(1, policy.max_attempts + 1):
            await self.limiter.acquire()
            if self._stopping:
                return  # left pending: its last line, if any, is not final
            worker.sending = True
            try:
                self._last_start = time.monotonic()
                if not self._first_start:
                    self._first_start = self._last_start
                reply = await client.send(body)
            finally:
                worker.sending = False
            verdict = self._handle(batch, first_attempt + n - 1, n, reply)
            if verdict is None or self._stopping:
                return
            if verdict is api.Verdict.RETRY:
                await self._sleep(policy.backoff(n, self._rng))
            # RENEW retries at once; PAUSE waits in the limiter, with every other worker.

    def _handle(self, batch: Batch, attempt: int, n: int, reply: Reply) -> api.Verdict | None:
        """Record one reply and act on it; the verdict if the batch should be tried again, else None."""
        verdict = reply.verdict
        summary = self.summary
        summary.requests += 1
        if n > 1:
            summary.retries += 1
        code = "transport" if reply.error_code is None else str(reply.error_code)
        summary.error_codes[code] += 1
        if code != "0" and code not in self._seen_codes:
            self._seen_codes.add(code)
            log.warning(
                "first reply with this error",
                error_code=code,
                error_info=reply.error_info,
                job_id=batch.job.job_id,
                batch=batch.index,
                verdict=verdict.value,
            )
        again = False
        if verdict is api.Verdict.OK:
            status = OK
        elif verdict is api.Verdict.PERMANENT:
            status = FAILED
        elif verdict is api.Verdict.CONFIG:
            status = RETRY  # not final: a plain --resume finishes the run once the configuration is fixed
            self._config_stop(f"the server answered {code} ({reply.error_info}); check credentials and region")
        elif verdict is api.Verdict.RENEW and not self.signer.can_renew:
            status = RETRY
            self._config_stop("the UserSig in TIM_USERSIG has expired; set TIM_SECRET_KEY or a fresh TIM_USERSIG")
        else:
            if verdict is api.Verdict.RENEW:
                self.signer.renew()
            elif verdict is api.Verdict.PAUSE:
                self.limiter.pause(self.config.policy.signature_pause)
                log.warning(
                    "signature checks rate-limited (70050): pausing all sending",
                    seconds=self.config.policy.signature_pause,
                )
            again = n < self.config.policy.max_attempts
            status = RETRY if again else FAILED
        final = status in (OK, FAILED)
        assert self._journal is not None
        self._journal.write(
            record(
                job_id=batch.job.job_id,
                batch=batch.index,
                batches=batch.job.batches,
                attempt=attempt,
                status=status,
                final=final,
                group_id=batch.job.group_id,
                recipients=batch.recipients,
                error_code=reply.error_code,
                error_info=reply.error_info,
                http_status=reply.http_status,
                latency_ms=reply.latency_ms,
                job_hash=batch.job.job_hash,
            )
        )
        self.progress.request_done(retry=n > 1)
        if status == OK:
            summary.ok += 1
            summary.recipients += len(batch.recipients or ())
        elif status == FAILED:
            summary.failed += 1
        if final:
            self.progress.batch_done(status)
        return verdict if again else None
