"""The words of a batch's fate, as the journal, the summary, the report and the metrics all say them."""

from __future__ import annotations

OK, RETRY, FAILED, REJECTED = "ok", "retry", "failed", "rejected"
# A request whose reply never came, of an API that must never be sent twice (timpush_push): it may
# have been delivered. Final: only --retry-unknown sends it again.
UNKNOWN = "unknown"
PENDING = "pending"  # not a status in the journal: a batch with no final line
STATUSES = frozenset({OK, RETRY, FAILED, REJECTED, UNKNOWN})
FINAL = frozenset({OK, FAILED, UNKNOWN})  # the statuses a batch's final line may have

TRANSPORT = "transport"  # the error code of a reply with no ErrorCode (HTTP error, timeout, no connection)


def code_key(error_code: object) -> str:
    """How a reply's ErrorCode is counted, everywhere (summary, report, metrics): `transport` for none."""
    return TRANSPORT if error_code is None else str(error_code)
