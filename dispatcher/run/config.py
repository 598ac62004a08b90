"""What one run is: its jobs, journal, endpoint, credentials and options, checked when made."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dispatcher.core.lease import DEFAULT_LEASE
from dispatcher.errors import library_words
from dispatcher.journal.uri import JournalURI
from dispatcher.run.preflight import check_api_rates, check_options, check_retry_unknown
from dispatcher.run.retry import RetryPolicy
from dispatcher.tim import rules
from dispatcher.tim.config import DEFAULT_TIMEOUT, Credentials


@dataclasses.dataclass(frozen=True)
class RunConfig:
    jobs: tuple[str, ...]
    out: Path | JournalURI  # a file, or a run in PostgreSQL
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
    lease: float = DEFAULT_LEASE  # seconds a claim on a batch of a run in PostgreSQL holds unless renewed
    # Where requests go for a while after the endpoint could not be reached (run.failover); None: nowhere else.
    backup_endpoint: str | None = None
    # --api-rate: (API name, calls a second) of the APIs paced apart from --rate (pacing.budgets.rate_of)
    api_rates: tuple[tuple[str, float], ...] = ()
    # --retry-unknown: with resume, send again the batches whose fate is unknown (a push whose reply never came)
    retry_unknown: bool = False

    def __post_init__(self) -> None:
        with library_words():
            self._check()

    def _check(self) -> None:
        check_options(
            batch_size=self.batch_size,
            rate=self.rate,
            concurrency=self.concurrency,
            max_attempts=self.policy.max_attempts,
            timeout=self.timeout,
            resume=self.resume,
            retry_failed=self.retry_failed,
            message_quota=self.message_quota,
            lease=self.lease,
            shared_run=isinstance(self.out, JournalURI),
        )
        check_api_rates(self.api_rates)
        check_retry_unknown(self.retry_unknown, resume=self.resume, shared_run=isinstance(self.out, JournalURI))
