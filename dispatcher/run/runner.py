"""Everything `dispatcher send` does, as a library: `await Runner(config, ...).run()`.

The runner checks what can be checked before anything is read (once: the engine, given the
journal, does not check again), opens and locks the journal, answers signals from its first
moment, pre-scans the jobs, opens the rate budget of every API they name (the one owner of the
limiters: `Budgets`), starts the sandbox for `sandbox=True`, and runs the engine. The summary it
returns carries the exit status the CLI exits with (`summary.exit_code`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from dispatcher import uris
from dispatcher.core.lease import DEFAULT_LEASE
from dispatcher.errors import UsageError, library_words
from dispatcher.jobs.memory import MemoryJobs
from dispatcher.jobs.reader import StreamedExport, api_names, shown
from dispatcher.jobs.values import JobValue
from dispatcher.journal.outcomes import Journal
from dispatcher.journal.store import JournalStore
from dispatcher.journal.uri import JournalURI, parse_journal_uri
from dispatcher.observe.events import Subscriber
from dispatcher.observe.plan import Plan, make_plan
from dispatcher.observe.summary import Summary
from dispatcher.pacing.base import StoreURI
from dispatcher.pacing.budgets import Budgets
from dispatcher.pacing.store import MEMORY, in_journal_database, parse_store
from dispatcher.run.config import RunConfig
from dispatcher.run.engine import Engine
from dispatcher.run.pairs import open_store, pair_of
from dispatcher.run.preflight import (
    RESERVED_FILES,
    check_not_journal,
    check_readable,
    default_concurrency,
    is_stream,
    reserve_open_files,
)
from dispatcher.run.retry import RetryPolicy
from dispatcher.run.signals import STOP_SIGNALS
from dispatcher.shared.run import shared_of
from dispatcher.threads import in_daemon_thread
from dispatcher.tim.apis import DEFAULT, REGISTRY
from dispatcher.tim.config import DEFAULT_TIMEOUT, Credentials

if TYPE_CHECKING:
    from dispatcher.observe.metrics import Exporter
    from dispatcher.observe.progress import RichProgress

T = TypeVar("T")
log = structlog.get_logger("dispatcher")


class Runner:
    """One `dispatcher send`, from Python.

    `sandbox`: start the built-in emulator in-process and send to it (the config's endpoint is
    replaced by its URL). `store`: where the rate budgets live (`memory://`, `redis://...`,
    `postgresql://...`); by default, for a journal in PostgreSQL its own database, else this process.
    `subscribers` hear every event of the run; `progress` adds the progress display (a terminal's);
    `exporter` the Prometheus metrics (`dispatcher.observe.metrics.Exporter`). With `handle_signals`
    (the default) SIGINT, SIGTERM and SIGHUP stop the run gracefully from the moment `run()` starts
    (a second stops it at once); the handlers there before are put back at the end. `on_finished`
    is called once the run's result stands, before the budgets and the sandbox close: from then on
    a signal changes nothing (the CLI's handler is told so, and exits with the summary's code).
    One event loop has one handler per signal: of runners run at once in one loop, at most one may
    handle signals (the others `handle_signals=False`, stopped by `stop()`).

    `jobs`: jobs held in memory instead of the config's files (whose `jobs` is then empty): an iterable
    of dicts, each what a line of a jobs file holds, or of `Notification`, `DirectMessage` and
    `GroupMessage` values; recipients may be any iterable of UserIDs (a generator, read in bounded
    memory). Read once, in order, with the rules and the journal of a file's jobs; a job is named by
    its index (`jobs[2]`). There is no pre-scan: as for standard input, the
    progress display has no totals and the sandbox makes any group a Public one."""

    def __init__(
        self,
        config: RunConfig,
        *,
        sandbox: bool = False,
        store: StoreURI | str | None = None,
        subscribers: Iterable[Subscriber] = (),
        progress: bool = False,
        exporter: Exporter | None = None,
        handle_signals: bool = True,
        on_finished: Callable[[], None] | None = None,
        journal: JournalStore | None = None,
        jobs: Iterable[Mapping[str, object] | JobValue] | None = None,
    ) -> None:
        self.config = config
        self._memory = None if jobs is None else MemoryJobs(_in_memory(jobs, config))
        self.sandbox = sandbox
        if store is None:  # a run in PostgreSQL paces in its database's budget, a file's in this process
            uri = config.out if isinstance(config.out, JournalURI) else None
            store = MEMORY if uri is None else in_journal_database(uri.conninfo)
        with library_words():
            self.store = parse_store(store) if isinstance(store, str) else store
        self._subscribers = list(subscribers)
        self._progress = progress
        self._exporter = exporter
        self._handle_signals = handle_signals
        self._on_finished = on_finished
        self._stopper = _Stopper(on_finished)
        self._journal = journal  # opened by the caller (`dispatcher work`: a run joined, not started)
        self.incomplete = False  # the run's plan is incomplete and no send will complete it (work)

    def stop(self) -> None:
        """What a signal does: first call, stop gracefully; second, at once. Safe before `run()`;
        after a run ended it changes nothing, and a later `run()` answers stop() and signals afresh."""
        self._stopper()

    async def run(self) -> Summary:
        """Run it: the summary, or the error that refused it (named in RunConfig's words, not flags)."""
        with library_words():
            return await self._run()

    async def _run(self) -> Summary:
        if self._stopper.finished:  # run again: a finished stopper would ignore every stop and signal
            self._stopper = _Stopper(self._on_finished)
        check_readable(self.config.jobs)
        run = self.config
        loop = asyncio.get_running_loop()
        handled = [getattr(signal, name) for name in STOP_SIGNALS] if self._handle_signals else []
        previous = {sig: signal.getsignal(sig) for sig in handled}
        for sig in handled:  # first: from here to the engine a signal stops the run before it sends
            loop.add_signal_handler(sig, self._stopper)
        stopper = self._stopper
        journal: JournalStore | None = self._journal
        setup = contextlib.ExitStack()  # the progress display, from the pre-scan to the run's end
        progress: RichProgress | None = None
        try:
            # The journal first: a second run on a journal in use is refused before it reads anything.
            if journal is None:
                journal = await open_store(
                    run.out,
                    resume=run.resume,
                    retry_failed=run.retry_failed,
                    rate=run.rate,
                    rate_store=self.store.shown,
                    max_attempts=run.policy.max_attempts,
                    message_quota=run.message_quota,
                    lease=run.lease,
                )
            if isinstance(journal, Journal):
                check_not_journal(run.jobs, journal)
            concurrency = run.concurrency or default_concurrency(run.rate)
            # The emulator shares the process: each connection is then an open file at both ends.
            reserve_open_files((2 if self.sandbox else 1) * concurrency + RESERVED_FILES)
            if self._progress and not any(is_stream(path) for path in run.jobs):
                from dispatcher.observe.progress import RichProgress

                # From the pre-scan on: a big export takes seconds to read, and the display says so.
                progress = setup.enter_context(RichProgress())
            plan = await self._prescan(journal, progress)
            apis: set[str] | None = set(plan.api_requests) if plan is not None else None
            if apis is None and not stopper.signalled:
                # No plan: a cheap scan of the jobs files for the APIs they name. A stream is left to
                # the run, which opens the budget of an API it meets there when it first sends with it.
                apis = await stopper.step(in_daemon_thread(lambda: api_names(run.jobs, stop=stopper.reading)))
            if stopper.signalled or apis is None:
                return _interrupted_before_sending(run)
            creds = run.credentials
            async with (
                Budgets(
                    self.store,
                    rate=run.rate,
                    sdkappid=creds.sdkappid,
                    message_quota=run.message_quota,
                    api_rates=dict(run.api_rates),
                ) as budgets,
                contextlib.AsyncExitStack() as stack,
            ):
                # Before anything is sent: a store that cannot be reached, or holds another rate, is
                # exit 2. A step that a signal cancels: a store that accepts and never answers would
                # hold it 2 s.
                await stopper.step(budgets.open(REGISTRY[name] for name in sorted(apis) or [DEFAULT]))
                if stopper.signalled:
                    return _interrupted_before_sending(run)
                if self.sandbox:
                    run = await self._start_sandbox(run, plan, stack)
                subscribers = list(self._subscribers)
                if progress is not None and plan is not None:
                    progress.planned(plan.batches, plan.skipped)
                    subscribers.append(progress)
                elif progress is not None:  # no totals (an export that is a stream): no display
                    setup.close()
                if self._exporter is not None:
                    subscribers.append(self._exporter.metrics)
                engine = Engine(run, subscribers=subscribers, journal=journal, budgets=budgets)
                engine.use(*pair_of(journal, run, self._memory))  # the runner picks the batches' source and journal
                if not stopper.attach(engine):
                    return _interrupted_before_sending(run)
                if self._exporter is not None:
                    # A metrics file that cannot be written stops the run like its journal would.
                    writer = asyncio.create_task(self._exporter.write_periodically(engine.halt))
                    stack.callback(writer.cancel)
                log.info(
                    "sending",
                    jobs=list(run.jobs) if self._memory is None else "in memory",
                    out=str(run.out),
                    endpoint=uris.shown_endpoint(run.endpoint),
                    backup_endpoint=None if run.backup_endpoint is None else uris.shown_endpoint(run.backup_endpoint),
                    rate=run.rate,
                    rate_store=self.store.shown,
                    concurrency=engine.concurrency,
                    resume=run.resume,
                )
                summary = await engine.run()
                stopper.finish()  # before the budgets and the sandbox close
        finally:
            if journal is not None:
                # The engine closed it already, unless the run never got to it: then it was refused or
                # interrupted before sending, and a journal it made and wrote nothing into is removed.
                journal.remove_if_unused()
                journal.close()
                shared = shared_of(journal)
                if shared is not None:
                    await shared.aclose()
                    self.incomplete = shared.incomplete
            stopper.finish()
            setup.close()
            if handled:
                _hand_back(loop, previous)
        log.info("finished", **summary.to_dict())
        return summary

    async def _prescan(self, journal: JournalStore, progress: RichProgress | None) -> Plan | None:
        """The pre-scan gives the progress display its totals and the sandbox its groups. A stream
        (stdin, a pipe, a FIFO) can be read only once, and that one reading is the run's."""
        run = self.config
        if not (self.sandbox or self._progress) or self._memory is not None or any(map(is_stream, run.jobs)):
            return None  # jobs held in memory are read once too: a generator could not be read again
        planning = in_daemon_thread(
            lambda: make_plan(
                run.jobs,
                run.batch_size,
                run.rate,
                journal.state,
                run.retry_failed,
                self.sandbox,
                stop=self._stopper.reading,
                streams=False,
                message_quota=run.message_quota,
                on_rows=None if progress is None else progress.rows_read,
                api_rates=dict(run.api_rates),
            )
        )
        try:
            return await self._stopper.step(planning)
        except StreamedExport as exc:  # the run reads it; the display goes without totals
            log.info("a recipients_file is a stream: no pre-scan", path=str(exc))
            return None

    async def _start_sandbox(self, run: RunConfig, plan: Plan | None, stack: contextlib.AsyncExitStack) -> RunConfig:
        """The emulator, in-process, with the groups the pre-scan found; the run sent to it."""
        from dispatcher.sandbox import Group, Sandbox

        groups = None if plan is None else {gid: Group(gtype) for gid, gtype in plan.groups.items()}
        # At least 1 a second: a window of "0 requests" would refuse every request of a slow run.
        emulator = Sandbox(
            run.credentials,
            groups=groups,
            rate=max(1, math.ceil(run.rate)),
            message_quota=run.message_quota,
            # An API paced apart (--api-rate) is taken at that pace: the edition the run says the app has.
            api_rates={name: max(1, math.ceil(rate)) for name, rate in run.api_rates},
        )
        url = await emulator.start()
        stack.push_async_callback(emulator.stop)
        log.info("sandbox started", url=url)
        return dataclasses.replace(run, endpoint=url, backup_endpoint=None)


class _Stopper:
    """The signal handler of a run, installed before anything is read. Until the engine exists a
    signal cancels the step of the set-up under way (`step`: the pre-scan, the opening of the rate
    budgets) and is remembered; `attach` hands it the engine, and from then on a signal is the
    engine's graceful stop (a second stops at once)."""

    def __init__(self, on_finished: Callable[[], None] | None) -> None:
        self.engine: Engine | None = None
        self._step: asyncio.Future[Any] | None = None
        self._woken: asyncio.Future[None] | None = None  # set by a signal: the step is given up
        self.reading = threading.Event()  # tells the pre-scan's reader thread to give up
        self.signalled = False
        self.finished = False
        self._on_finished = on_finished

    def __call__(self) -> None:
        if self.finished:  # the run's result stands
            return
        if self.engine is not None:
            self.engine.stop()
            return
        self.signalled = True
        self.reading.set()
        if self._step is not None:
            self._step.cancel()
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    async def step(self, work: Coroutine[Any, Any, T]) -> T | None:
        """Await one step of the set-up so that a signal ends it at once (a rate store that accepts
        and never answers, an endless input): its result, or None if a signal came.

        The step is cancelled, but not waited for: a library may swallow the cancellation (redis-py
        does, when it lands as a read is resumed) and hold on until its own timeout."""
        if self.signalled:
            work.close()  # never started
            return None
        task: asyncio.Future[T] = asyncio.ensure_future(work)
        task.add_done_callback(_retrieve)
        self._step = task
        woken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._woken = woken
        try:
            await asyncio.wait({task, woken}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the run itself is cancelled
            task.cancel()
            raise
        finally:
            self._step = self._woken = None
        if self.signalled:
            return None
        return task.result()

    def finish(self) -> None:
        """The run is over (its summary, or the error that ended it, is its exit status): from now
        on a signal changes nothing here, and `on_finished` is told."""
        if not self.finished:
            self.finished = True
            if self._on_finished is not None:
                self._on_finished()

    def attach(self, engine: Engine) -> bool:
        """From now on signals stop `engine`. False if one came already (while the sandbox or the
        rate store was being set up, say): then the run must not start at all."""
        self.engine = engine
        return not self.signalled


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a set-up step's outcome as seen: one given up after a signal may end in an error."""
    if not task.cancelled():
        task.exception()


def _hand_back(loop: asyncio.AbstractEventLoop, previous: dict[signal.Signals, Any]) -> None:
    """Give the signals back to the handlers they had before the run. Removing the loop's handler
    restores the default action, so this thread blocks them until the old handler is back (one
    that comes meanwhile waits for it, and reaches it)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, list(previous))
    try:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            if handler is not None:
                signal.signal(sig, handler)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _in_memory(jobs: Iterable[Mapping[str, object] | JobValue], config: RunConfig) -> Iterable[object]:
    """The jobs given to a Runner, or a UsageError for what is surely a mistake."""
    if isinstance(jobs, str | bytes | os.PathLike):
        raise UsageError(
            "Runner(jobs=...) takes jobs held in memory, not a file name: name jobs files in RunConfig(jobs=(...))"
        )
    if isinstance(jobs, Mapping | JobValue) or not isinstance(jobs, Iterable):
        raise UsageError("Runner(jobs=...) takes an iterable of jobs, not one job: give jobs=[job]")
    if config.jobs:
        raise UsageError(
            "give the jobs as files (RunConfig(jobs=...)) or held in memory (Runner(jobs=...)), not both: "
            "set RunConfig(jobs=())"
        )
    return jobs


def _interrupted_before_sending(run: RunConfig) -> Summary:
    log.warning("interrupted before sending: nothing was sent")
    summary = Summary(out=shown(str(run.out)), interrupted=True)
    summary.exit_code = summary.decide_exit_code()
    return summary


@dataclasses.dataclass
class Worked:
    """What `work` did: the worker's summary, and whether the run's plan is incomplete with its
    send gone (every batch planned is final, the rest needs `send --resume` with the jobs)."""

    summary: Summary
    incomplete: bool


async def work(
    uri: JournalURI | str,
    *,
    endpoint: str,
    credentials: Credentials,
    rate: float | None = None,
    store: StoreURI | str | None = None,
    concurrency: int | None = None,
    request_timeout: float = DEFAULT_TIMEOUT,
    lease: float = DEFAULT_LEASE,
    subscribers: Iterable[Subscriber] = (),
    exporter: Exporter | None = None,
    handle_signals: bool = True,
    on_finished: Callable[[], None] | None = None,
    backup_endpoint: str | None = None,
    api_rates: Iterable[tuple[str, float]] = (),
) -> Worked:
    """Everything `dispatcher work URI` does, from Python: join the run in PostgreSQL that `uri`
    names and send its batches that have no final outcome, until every batch of a complete plan is
    final (or the plan is incomplete and its send is gone). The worker paces with the run, never
    on its own: another store or rate than the run's is a UsageError before anything is sent;
    `rate` None takes the run's. `store` None: the journal's database, as for the run's send.
    `request_timeout`: seconds for one request (`--timeout`); `backup_endpoint`: where requests go for a
    while after `endpoint` could not be reached (`--backup-endpoint`, or the region's backup domain);
    `api_rates`: the APIs paced apart (`--api-rate`), as the run's send gave them: a budget held at
    another rate is refused."""

    with library_words():
        return await _work(
            uri,
            endpoint=endpoint,
            credentials=credentials,
            rate=rate,
            store=store,
            concurrency=concurrency,
            request_timeout=request_timeout,
            lease=lease,
            subscribers=subscribers,
            exporter=exporter,
            handle_signals=handle_signals,
            on_finished=on_finished,
            backup_endpoint=backup_endpoint,
            api_rates=tuple(api_rates),
        )


async def _work(
    uri: JournalURI | str,
    *,
    endpoint: str,
    credentials: Credentials,
    rate: float | None,
    store: StoreURI | str | None,
    concurrency: int | None,
    request_timeout: float,
    lease: float,
    subscribers: Iterable[Subscriber],
    exporter: Exporter | None,
    handle_signals: bool,
    on_finished: Callable[[], None] | None,
    backup_endpoint: str | None,
    api_rates: tuple[tuple[str, float], ...],
) -> Worked:
    from dispatcher.journal.pgsession import check_available
    from dispatcher.shared.open import check_same_pacing, open_work

    if isinstance(uri, str):
        uri = parse_journal_uri(uri, "work")
    check_available(uri)
    journal, row = await open_work(uri, lease=lease)
    try:
        budget = in_journal_database(uri.conninfo) if store is None else store
        budget = parse_store(budget) if isinstance(budget, str) else budget
        # Before anything is sent: a worker paces with the run, never on its own.
        config = RunConfig(
            jobs=(),
            out=uri,
            endpoint=endpoint,
            credentials=credentials,
            rate=check_same_pacing(uri, row, rate, budget.shown),
            concurrency=concurrency,
            policy=RetryPolicy(max_attempts=row.max_attempts),
            timeout=request_timeout,
            message_quota=row.message_quota,
            lease=lease,
            backup_endpoint=backup_endpoint,
            api_rates=api_rates,
        )
    except BaseException:
        await journal.aclose()
        raise
    runner = Runner(
        config,
        store=budget,
        subscribers=subscribers,
        exporter=exporter,
        handle_signals=handle_signals,
        on_finished=on_finished,
        journal=journal,
    )
    summary = await runner.run()
    return Worked(summary, runner.incomplete)
