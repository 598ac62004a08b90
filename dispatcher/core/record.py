"""One outcome line: a request's reply, or a rejected job, with the keys of docs/reference.md in its order."""

from __future__ import annotations

import time
from typing import Any


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds; the date and time of day are formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


now_iso = _Clock()


def record(
    *,
    job_id: str,
    batch: int | None,
    batches: int | None,
    attempt: int,
    status: str,
    final: bool,
    group_id: str | None,
    recipients: tuple[str, ...] | None,
    error_code: int | None,
    error_info: str,
    http_status: int | None,
    latency_ms: float | None,
    job_hash: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """One outcome line, with the keys of docs/reference.md in its order."""
    return {
        "job_id": job_id,
        "batch": batch,
        "batches": batches,
        "attempt": attempt,
        "status": status,
        "final": final,
        "group_id": group_id,
        "recipients": recipients,
        "error_code": error_code,
        "error_info": error_info,
        "http_status": http_status,
        "latency_ms": latency_ms,
        "at": now_iso(),
        "job_hash": job_hash,
        **extra,
    }
