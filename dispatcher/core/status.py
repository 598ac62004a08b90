"""The words of a batch's fate, as the journal, the summary, the report and the metrics all say them."""

from __future__ import annotations

OK, RETRY, FAILED, REJECTED = "ok", "retry", "failed", "rejected"
PENDING = "pending"  # not a status in the journal: a batch with no final line
STATUSES = frozenset({OK, RETRY, FAILED, REJECTED})

TRANSPORT = "transport"  # the error code of a reply with no ErrorCode (HTTP error, timeout, no connection)


def code_key(error_code: object) -> str:
    """How a reply's ErrorCode is counted, everywhere (summary, report, metrics): `transport` for none."""
    return TRANSPORT if error_code is None else str(error_code)
