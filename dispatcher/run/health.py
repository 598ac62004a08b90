"""What the endpoint has done so far, for telling an outage from one unlucky batch.

A transport fault (no reply with an ErrorCode) makes a batch `failed` only if the endpoint
answered some request that started after the batch's first attempt: proof that it was up while
this batch kept failing. An endpoint that cannot be reached, or stops answering, halts the run
with every unfinished batch left resumable: outages never use up the batches' attempts. (With one
worker there is no such proof, so a batch that only ever meets transport faults halts the run
instead of failing.)
"""

from __future__ import annotations

from dispatcher.run.client import Reply

# Connection failures (refused, DNS, TLS, connect timeout) before the endpoint has answered anything
# at all: the endpoint or the network is misconfigured, and every request would fail alike.
UNREACHABLE_AFTER = 3
# Transport faults in a row, across all workers, with no reply carrying an ErrorCode in between: an
# outage. The run halts as resumable instead of spending every batch's attempts on it.
OUTAGE_STREAK = 50


class Health:
    """The outage counters of one run, fed every reply in the order they come."""

    __slots__ = ("_answered_upto", "_fault_streak", "_reached", "_target", "_unreachable", "started")

    def __init__(self, target: str) -> None:
        self._target = target  # the endpoint's URL, for messages
        self._reached = False  # any HTTP response at all
        self.started = 0  # requests started; each request's number is its place in this count
        self._answered_upto = 0  # the highest number of a request answered with an ErrorCode (or 429)
        self._unreachable = 0  # connection failures while nothing was reached yet
        self._fault_streak = 0  # transport faults since the last reply with an ErrorCode

    def start(self) -> int:
        """Count a request as it starts; its number."""
        self.started += 1
        return self.started

    def observe(self, reply: Reply, transport_retry: bool, number: int, first_number: int, last: bool) -> str | None:
        """Count one reply; the reason to halt the run, if it shows an outage.

        `transport_retry`: the reply is a fault its endpoint would retry; `number` is the request's
        place among the run's requests, `first_number` that of its batch's first attempt in this
        run; `last`: the batch has no attempt left."""
        if reply.http_status is not None:
            self._reached = True
        if reply.error_code is not None or reply.http_status == 429:  # "slow down" is an answer too
            self._answered_upto = max(self._answered_upto, number)
            self._fault_streak = 0
            return None
        if not transport_retry:
            return None
        self._fault_streak += 1
        # A failure to connect after which the next attempts go to the backup domain is not counted:
        # the backup is yet to be tried (a failure to connect to it is counted).
        if reply.connect_failed and not reply.failed_over and not self._reached:
            self._unreachable += 1
            if self._unreachable >= UNREACHABLE_AFTER or last:
                advice = "check --endpoint or --region, DNS and the network"
                return f"cannot reach {self._target}: {reply.error_info}; {advice}"
        if self._fault_streak >= OUTAGE_STREAK or (last and self._answered_upto <= first_number):
            return (
                f"the endpoint is not answering ({self._fault_streak} transport faults in a row, "
                f"last: {reply.error_info}); nothing was marked failed, resume when it is back"
            )
        return None
