"""The send engine: a source of batches -> bounded queue -> worker pool -> a journal of their fates.

The source (`run.sources`: the jobs files here, or claims of a run shared in PostgreSQL) feeds batches
into a bounded queue; `concurrency` workers take a batch each and send it attempt after attempt
(`attempts`), each reply recorded in one step (`record`); the journal (`core.ports.Journal`) takes,
commits and closes the lines. The runner picks the source and the journal (`use`); on its own, the
engine takes the pair of the journal it is given (`pairs`), or reads `config.jobs` into a file journal.
Stopping is cooperative (`stopping`).

Invariants:
- Nothing awaits between a reply and its journal line, so a reply is on record before anything
  else can happen (a stop, a crash of another task): `record.Recorder.reply`.
- The journal commits a reply's line before anything more of that reply happens (another attempt,
  a pace step, its next batch): `attempts.Attempts.deliver`.
- A request starts only on a batch the source holds for it (a claim, for a shared run).
- Outages never use up the batches' attempts (`health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog

from dispatcher import uris
from dispatcher.core.batch import Batch
from dispatcher.core.ports import BatchSource, Journal
from dispatcher.core.state import JournalState
from dispatcher.errors import UsageError, library_words
from dispatcher.jobs.reader import shown
from dispatcher.journal.outcomes import open_journal
from dispatcher.journal.store import JournalStore
from dispatcher.journal.uri import JournalURI
from dispatcher.observe.events import Bus, Subscriber
from dispatcher.observe.runlog import RunLog
from dispatcher.observe.summary import Summary
from dispatcher.pacing.base import Clock, Limiter
from dispatcher.pacing.budgets import Budgets
from dispatcher.pacing.memory import frozen_heap
from dispatcher.run.attempts import Attempts
from dispatcher.run.client import Client
from dispatcher.run.config import RunConfig
from dispatcher.run.failover import BACK_AFTER, Failover
from dispatcher.run.feed import RunFeed
from dispatcher.run.health import Health
from dispatcher.run.pairs import pair_of
from dispatcher.run.preflight import (
    RESERVED_FILES,
    check_not_journal,
    check_readable,
    default_concurrency,
    reserve_open_files,
)
from dispatcher.run.record import Recorder
from dispatcher.run.stopping import Stopping, Worker
from dispatcher.tim.usersig import Signer

log = structlog.get_logger("dispatcher")
Sleep = Callable[[float], Awaitable[None]]


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
        back_to_main_after: float = BACK_AFTER,
    ) -> None:
        """`journal`: one the caller opened already (`outcomes.open_journal`), to hold its lock from
        before a pre-scan; the engine writes it and closes it at the end of `run()`. `subscribers`
        hear every event of the run (dispatcher.observe.events) after the summary and the run log do.

        `budgets`: the run's limiters, one per API path, which the caller owns (opened before the
        engine, closed after it); without them the engine makes its own, in-process, and closes them
        at the end: each API gets a limiter (batchsendmsg's with its per-minute quota), or `limiter`
        is shared by every API and counts calls only. `clock` and `sleep` time the run's pacing,
        pauses and backoff (in virtual time in tests), and the stay on the backup endpoint, which ends
        `back_to_main_after` seconds after the main one could not be reached (`run.failover`)."""
        self.config = config
        self.summary = Summary(out=shown(str(config.out)), rate_limit=config.rate, message_quota=config.message_quota)
        self._stop = Stopping(config.grace)
        # One stream of events feeds every output; the summary and the run log are always there.
        self._bus = Bus([self.summary.on_event, RunLog(), *subscribers], on_error=self._stop.output_failed)
        self._emit = self._stop.emit = self._bus.emit
        creds = config.credentials
        self._own_budgets = budgets is None
        self.budgets = budgets or Budgets(
            rate=config.rate,
            sdkappid=creds.sdkappid,
            message_quota=config.message_quota,
            shared=limiter,
            clock=clock,
            sleep=sleep,
            api_rates=dict(config.api_rates),
        )
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.signer = signer or Signer(creds.sdkappid, creds.identifier, creds.secret_key, creds.usersig)
        self.concurrency = config.concurrency or default_concurrency(config.rate)
        self._store = journal
        self._pair: tuple[BatchSource, Journal] | None = None
        # What the endpoint has done so far; with a backup, a run halts as unreachable only once both failed.
        backup = config.backup_endpoint
        main = uris.shown_endpoint(config.endpoint)
        self._health = Health(main if backup is None else f"{main} or its backup {uris.shown_endpoint(backup)}")
        self._back_to_main_after = back_to_main_after

    @property
    def state(self) -> JournalState:
        """What the run's journal holds (empty until it is opened)."""
        if self._pair is not None:
            return self._pair[1].state
        return JournalState() if self._store is None else self._store.state

    def use(self, source: BatchSource, journal: Journal) -> None:
        """Where batches come from and where their fates go (the runner's pick); the engine closes the
        journal at the end of `run()`. Without it, the run takes the pair of the journal given (`pairs`)."""
        self._pair = (source, journal)

    def stop(self) -> None:
        """First call: stop gracefully (in-flight requests finish and are recorded). Second: at once."""
        self._stop.stop()

    def halt(self, reason: str) -> None:
        """Stop early for a cause outside the engine (an output of the run that cannot be written)."""
        self._stop.halt(reason)

    def _default_pair(self) -> tuple[BatchSource, Journal]:
        """Without `use`: the pair of the journal given, or the jobs files into a file journal opened here."""
        config = self.config
        store = self._store
        if store is None:
            # Run on its own (not by a Runner, which checked all this before it opened the journal).
            check_readable(config.jobs)
            reserve_open_files(self.concurrency + RESERVED_FILES)
            if isinstance(config.out, JournalURI):  # it needs the opening and the signals of a Runner
                raise UsageError("an Engine on its own takes a file journal: run a PostgreSQL one with a Runner")
            journal = open_journal(config.out, resume=config.resume)
            try:
                check_not_journal(config.jobs, journal)
            except BaseException:
                journal.close()
                raise
            store = self._store = journal
        return pair_of(store, config)

    async def run(self) -> Summary:
        started = self._clock()
        with library_words():  # a refusal of its own set-up names RunConfig's fields, not flags
            source, journal = self._pair = self._pair or self._default_pair()
        stop, config = self._stop, self.config
        recorder = Recorder(
            config,
            journal,
            emit=self._emit,
            halt=stop.halt,
            signer=self.signer,
            health=self._health,
            budgets=self.budgets,
        )
        attempts = Attempts(
            config,
            source=source,
            journal=journal,
            recorder=recorder,
            stop=stop,
            emit=self._emit,
            budgets=self.budgets,
            health=self._health,
            signer=self.signer,
            clock=self._clock,
            sleep=self._sleep,
            rng=self._rng,
        )
        keeper = asyncio.create_task(journal.keep(stop.trouble))
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        try:
            client = Client(
                config.endpoint,
                config.credentials.sdkappid,
                config.credentials.identifier,
                self.signer,
                concurrency=self.concurrency,
                timeout=config.timeout,
                failover=Failover(
                    config.endpoint,
                    config.backup_endpoint,
                    clock=self._clock,
                    back_after=self._back_to_main_after,
                    on_switch=self._emit,
                ),
            )
            async with frozen_heap(), contextlib.aclosing(client), asyncio.TaskGroup() as group:
                feed = RunFeed(queue, journal, stop, recorder, self._emit, self._sleep)
                stop.producer = group.create_task(self._produce(source, feed))
                for _ in range(self.concurrency):
                    worker = Worker()
                    worker.task = group.create_task(attempts.work(worker, queue, client))
                    stop.workers.append(worker)
        finally:
            stop.end()
            keeper.cancel()
            try:
                if self._own_budgets:
                    await self.budgets.aclose()
            except Exception as exc:  # closing a store's connection is not worth a traceback
                log.warning("closing a rate limiter failed", error=str(exc))
            # Stopped before a line: no empty journal stays. After a stop signal, no wait on a quiet store.
            unused = bool(stop.halt_reasons) or stop.interrupted
            await journal.close(stop.trouble, unused=unused, at_once=stop.interrupted)
        self.summary.elapsed_s = self._clock() - started
        self.summary.sending_s = max(0.0, attempts.last_start - attempts.first_start)
        self.summary.exit_code = self.summary.decide_exit_code()
        return self.summary

    async def _produce(self, source: BatchSource, feed: RunFeed) -> None:
        await source.feed(feed)
        # Not when cancelled (a worker's bug ends the run) nor stopping: the queue may be full, with no
        # worker left to take from it, and the run would wait on it for good.
        if not self._stop.stopping:
            for _ in range(self.concurrency):
                await feed.queue.put(None)
