"""The run's log lines about what happens (not how it is configured: that is logs.py), from its events.

Quiet by design: nothing per request at the default level. The first reply with each error code is
a warning once, with the job and batch it came with; a rejected job, a step down of the pace (at
most one a second, however many replies said "too frequent"), a stop and its cause are one line
each.
"""

from __future__ import annotations

import structlog

from dispatcher import uris
from dispatcher.observe.events import (
    DomainSwitched,
    Event,
    Halted,
    JobRejected,
    JobsCutShort,
    PaceStepped,
    ReplyRecorded,
    StopRequested,
)

log = structlog.get_logger("dispatcher")

# Distinct error codes warned about one by one; a server inventing codes must not flood the log (nor
# grow the set without end). The summary still counts every code.
MAX_CODES = 50


class RunLog:
    """An events subscriber that logs; one per run (it remembers the error codes seen)."""

    def __init__(self) -> None:
        self._seen_codes: set[str] = set()

    def __call__(self, event: Event) -> None:
        if isinstance(event, ReplyRecorded):
            if event.code != "0" and event.code not in self._seen_codes:
                if len(self._seen_codes) > MAX_CODES:
                    return
                self._seen_codes.add(event.code)
                if len(self._seen_codes) > MAX_CODES:  # the set holds one more: this line is said once
                    log.warning(f"more than {MAX_CODES} error codes: the rest are not logged; the summary counts them")
                    return
                log.warning(
                    "first reply with this error",
                    error_code=event.code,
                    error_info=event.error_info,
                    job_id=event.job_id,
                    batch=event.batch,
                    verdict=event.verdict,
                )
        elif isinstance(event, PaceStepped):
            log.warning(
                "the server said too frequent: the pace steps down",
                api=event.api,
                pace=round(event.pace, 1),
                error_code=event.code,
            )
        elif isinstance(event, JobRejected):
            if event.recorded:
                log.warning("job rejected", job_id=event.job_id, reason=event.reason)
        elif isinstance(event, Halted):
            if event.first:
                log.error("stopping the run early: fix the cause, then --resume", reason=event.reason)
            else:
                log.error("also", reason=event.reason)
        elif isinstance(event, JobsCutShort):
            log.warning(
                "a jobs file became shorter while it was read: the jobs after the cut were not read, and nothing "
                "of them is on record; restore the file and --resume",
                file=event.path,
                read_bytes=event.read_bytes,
                bytes_at_open=event.bytes_at_open,
            )
        elif isinstance(event, DomainSwitched):
            if event.to == "backup":
                log.warning(
                    "the main domain cannot be reached: sending to the backup domain for a while",
                    backup=uris.shown_endpoint(event.url),
                    error=event.reason,
                )
            else:
                log.info("back to the main domain", endpoint=uris.shown_endpoint(event.url), reason=event.reason)
        elif isinstance(event, StopRequested):
            if event.at_once:
                log.warning(
                    "second signal: stopping at once; requests in flight are not awaited, and their lines say so"
                )
            else:
                log.warning("stopping: finishing requests in flight; resume with --resume", grace_s=event.grace_s)
