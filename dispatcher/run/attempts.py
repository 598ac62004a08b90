"""The attempt loop: a worker sends one batch, attempt after attempt, until it has a final fate, the
run stops, or the batch is no longer this worker's (a source of claims takes it back).

Each attempt: the source confirms the batch, the group's pace and the API's rate slot are waited
for, the source holds the batch for the request's time, the request goes out, its reply is recorded
(`record`, in one step), and the journal commits that line before anything more of the reply happens
(another attempt, a pace step, the next batch). Outages never use up the batches' attempts (`health`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping

from dispatcher.core.batch import Batch
from dispatcher.core.ports import BatchSource, Journal
from dispatcher.core.status import code_key
from dispatcher.errors import DispatcherError, RateStoreError
from dispatcher.observe.events import ClaimLost, Event, PaceStepped, RateWaited
from dispatcher.pacing.base import Clock
from dispatcher.pacing.budgets import Budgets
from dispatcher.pacing.group import GroupPacer
from dispatcher.run.client import Client
from dispatcher.run.config import RunConfig
from dispatcher.run.decide import Sent
from dispatcher.run.health import Health
from dispatcher.run.record import Recorder
from dispatcher.run.stopping import Stopping, Worker
from dispatcher.tim.usersig import Signer

Sleep = Callable[[float], Awaitable[None]]


class Attempts:
    """Every worker's loop: take a batch from the queue, send it until it is done."""

    def __init__(
        self,
        config: RunConfig,
        *,
        source: BatchSource,
        journal: Journal,
        recorder: Recorder,
        stop: Stopping,
        emit: Callable[[Event], None],
        budgets: Budgets,
        health: Health,
        signer: Signer,
        clock: Clock,
        sleep: Sleep,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._source = source
        self._journal = journal
        self._recorder = recorder
        self._stop = stop
        self._emit = emit
        self._budgets = budgets
        self._health = health
        self._signer = signer
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._group_pacer = GroupPacer(clock, sleep)
        self.first_start = 0.0
        self.last_start = 0.0

    async def work(self, worker: Worker, queue: asyncio.Queue[Batch | None], client: Client) -> None:
        while not self._stop.stopping:
            batch = await queue.get()
            if batch is None:
                return
            await self.deliver(worker, batch, client)

    async def deliver(self, worker: Worker, batch: Batch, client: Client) -> None:
        policy = self._config.policy
        stop = self._stop
        source = self._source
        endpoint = batch.job.endpoint
        try:
            limiter = await self._budgets.get(endpoint)
        except DispatcherError as exc:  # a budget that cannot be had (unreachable, another rate): stay resumable
            stop.halt(str(exc))
            return
        job_id = batch.job.job_id
        state = self._journal.state
        first_attempt = state.last_attempt(job_id, batch.index) + 1
        # What a partial reply left of the batch: the recipients to send, and those failed for good.
        left = state.undelivered(job_id, batch.index, self._config.retry_failed or source.resends_failed)
        pending: tuple[str, ...] | None = batch.recipients
        lost: Mapping[str, int | None] = {}
        if left is not None:
            pending, lost = left
        first_number = 0  # the number of this batch's first request, once it starts
        for n in range(1, policy.max_attempts + 1):
            if not await source.confirm(batch):
                # Taken away (its job withdrawn on a resume): nothing more of it goes out. Asked before
                # the slot, so that nothing waits between the slot and the request.
                self._emit(ClaimLost(job_id, batch.index))
                return
            body = batch.body(pending)  # before the slot: nothing may hold a request between slot and write
            counts = endpoint.quota_seconds is not None and self._budgets.counts_quota
            cost = len(pending) if pending and counts else 1
            asked = self._clock()
            if endpoint.group_rate is not None and batch.job.group_id is not None:
                # Before the API's slot, so that nothing waits between that slot and the request.
                await self._group_pacer.acquire(batch.job.group_id, endpoint.group_rate)
            try:
                await limiter.acquire(cost)
            except RateStoreError as exc:  # the shared budget is lost: start nothing more, stay resumable
                stop.halt(str(exc))
                return
            self._emit(RateWaited(self._clock() - asked, endpoint.name, limiter.pace, cost if counts else 0))
            if stop.stopping:
                return  # left pending: its last line, if any, is not final
            if not await source.hold(batch, self._config.timeout):
                # It may be taken back before the reply comes (its claim runs out): someone else sends it.
                self._emit(ClaimLost(job_id, batch.index))
                return
            if not endpoint.resends_unsure and self._journal.marks_sent:
                # On record before it leaves: killed with it in flight, the process leaves it `unknown`.
                marked = self._recorder.sent_unsure(
                    batch, first_attempt + n - 1, Sent(pending, lost, self._signer.generation)
                )
                if not marked or not await self._journal.commit():
                    return
            worker.request = (batch, pending)
            try:
                started = self.last_start = self._clock()
                if not self.first_start:
                    self.first_start = started
                number = self._health.start()
                first_number = first_number or number
                signed = self._signer.generation
                reply = await client.send(body, endpoint)
            except asyncio.CancelledError:  # a stop at once: no reply will come, and the line says so
                latency_ms = round((self._clock() - started) * 1000, 1)
                self._recorder.unanswered(batch, first_attempt + n - 1, Sent(pending, lost, signed), latency_ms)
                raise
            finally:
                worker.request = None
            sent = Sent(pending, lost, signed)
            decision, again = self._recorder.reply(batch, first_attempt + n - 1, n, reply, number, first_number, sent)
            # The line is in the store before anything more of this reply happens. A stopping run does
            # not wait for a commit that would: the journal's close commits the line.
            if not await self._journal.commit(wait=not stop.stopping):
                return
            if not source.still_ours(batch):  # the store refused its line: the batch was taken over
                self._emit(ClaimLost(job_id, batch.index, decision.status, decision.delivered))
                return
            if endpoint.too_frequent(reply.error_code):  # its line is written: the pace may step down now
                pace = await limiter.over_rate(self._clock() - started)
                if pace is not None:
                    self._emit(PaceStepped(endpoint.name, pace, code_key(reply.error_code)))
            if not again or stop.stopping:
                return
            pending, lost = decision.pending, decision.lost
            if decision.backoff:
                await self._sleep(policy.backoff(n, self._rng))
            # A renewal retries at once; a pause (70050, Retry-After) waits in the limiter, with every other worker.
