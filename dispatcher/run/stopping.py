"""How a run stops: gracefully, at once, or halted by a cause that would fail every request alike.

A first signal (or a halt: a configuration error, a journal that cannot be written, an endpoint that
does not answer) stops the source and the idle workers, while requests in flight finish and are
recorded; a second signal, or the end of the grace period, cancels everything at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import structlog

from dispatcher.core.batch import Batch
from dispatcher.observe.events import Event, Halted, RequestUnanswered, StopRequested, Subscriber

log = structlog.get_logger("dispatcher")


class Worker:
    __slots__ = ("request", "task")

    def __init__(self) -> None:
        # The request on the wire, if any (its batch and the recipients it sends): a graceful stop
        # lets it finish; a stop at once tells of it, as its reply will never be recorded.
        self.request: tuple[Batch, tuple[str, ...] | None] | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def sending(self) -> bool:
        return self.request is not None


class Stopping:
    """The stop and halt state of one run, and the tasks a stop ends."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.emit: Callable[[Event], None] = lambda event: None  # the run's bus, once it has one
        self.stopping = False
        self.interrupted = False  # by a signal (`stop`)
        self.halt_reasons: set[str] = set()
        self.reading_stopped = threading.Event()  # tells a reader thread to give up
        self.producer: asyncio.Task[None] | None = None
        self.workers: list[Worker] = []
        self._hard_stop: asyncio.TimerHandle | None = None

    def stop(self) -> None:
        """First call: stop gracefully (in-flight requests finish and are recorded). Second: at once."""
        if self.interrupted:
            self.emit(StopRequested(at_once=True, grace_s=self.grace))
            self.cancel_all()
            return
        self.interrupted = True
        self.emit(StopRequested(at_once=False, grace_s=self.grace))
        self.begin()
        self._hard_stop = asyncio.get_running_loop().call_later(self.grace, self.cancel_all)

    def begin(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.reading_stopped.set()
        if self.producer is not None:
            self.producer.cancel()
        for worker in self.workers:
            if not worker.sending and worker.task is not None:
                worker.task.cancel()

    def cancel_all(self) -> None:
        self.begin()
        for worker in self.workers:
            if worker.request is not None and worker.task is not None and not worker.task.done():
                batch, recipients = worker.request
                worker.request = None  # told once, whether a second signal or the grace period ends it
                count = None if recipients is None else len(recipients)
                self.emit(RequestUnanswered(batch.job.endpoint.name, batch.job.job_id, batch.index, count))
        if self.producer is not None:  # again: a step it was cancelled in may still be ending
            self.producer.cancel()
        for worker in self.workers:
            if worker.task is not None:
                worker.task.cancel()

    def halt(self, reason: str) -> None:
        """Stop early for a cause that will fail every request alike; unfinished work stays resumable."""
        if reason not in self.halt_reasons:  # a second cause is news too (say, the journal as well)
            self.emit(Halted(reason, first=not self.halt_reasons))
            self.halt_reasons.add(reason)
        self.begin()

    def output_failed(self, subscriber: Subscriber, exc: Exception) -> None:
        """A subscriber raised (a bug in an output): stop as for any internal error, so that the
        workers are not cancelled with replies in flight, and those replies are still recorded."""
        name = getattr(subscriber, "__qualname__", type(subscriber).__qualname__)
        log.error("internal error in an output of the run", subscriber=name, error=f"{type(exc).__name__}: {exc}")
        self.halt(f"internal error in an output of the run ({name}): {type(exc).__name__}: {exc}")

    def trouble(self, message: str, stop: bool) -> None:
        """What a journal tells the run: a cause to halt, or a warning."""
        if stop:
            self.halt(message)
        else:
            log.warning(message)

    def end(self) -> None:
        """The run is over: no reader goes on, no hard stop is pending."""
        self.reading_stopped.set()
        if self._hard_stop is not None:
            self._hard_stop.cancel()
