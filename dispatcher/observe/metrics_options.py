"""Where a run's metrics go, as a value with its defaults. Apart from the exporter (metrics.py), so that
the command line shows these defaults without importing prometheus_client."""

from __future__ import annotations

import dataclasses

WRITE_EVERY = 5.0  # seconds between textfile writes during a run
# Seconds for the reading of the last success and the push together: the last thing a run does
# must not hang it.
PUSH_TIMEOUT = 10.0
DEFAULT_HOST = "127.0.0.1"  # of the live /metrics: this machine only, unless asked
DEFAULT_JOB = "dispatcher"


@dataclasses.dataclass(frozen=True)
class MetricsOptions:
    """Where a run's metrics go (the CLI's --metrics-* and --pushgateway* flags)."""

    file: str | None = None
    port: int | None = None
    host: str = DEFAULT_HOST
    pushgateway: str | None = None
    job: str = DEFAULT_JOB
    write_every: float = WRITE_EVERY
    push_timeout: float = PUSH_TIMEOUT
