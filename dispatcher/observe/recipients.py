"""`dispatcher report --recipients FILE`: every named recipient's fate, one row each, for a warehouse.

The rows come from the journal in two passes, like the rest of the report (`observe.report`): the first
finds each batch's fate and where its first and latest lines are; the second writes each batch's
recipients when it reaches its latest line. A batch's first line names the whole batch (a later attempt
of batchsendmsg sends only some of it), so that list is held from its first line to its latest only for
the batches whose latest line names fewer. Then the planned batches no line names (a run in PostgreSQL
keeps its plan): pending, never sent. Memory is bounded by the batches, not by the recipients.

The rows go to a `Sink` (`observe.tables`), which writes them to a binary stream in the file's format.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from dispatcher.core.status import FAILED, OK, RETRY, code_key
from dispatcher.journal.uri import JournalURI
from dispatcher.observe.journals import reading, unsent_of
from dispatcher.observe.passes import NOT_SENT, FirstPass, Place, Sources, first_pass, journal_records, reason_of
from dispatcher.tim.codes import meaning

if TYPE_CHECKING:
    from collections.abc import Sequence

# The table's columns, in order: the reference (section 3, the recipients table) gives their types.
COLUMNS = ("job_id", "job_hash", "user_id", "status", "error_code", "error_info", "meaning", "attempts", "last_at")
DELIVERED, PENDING = "delivered", "pending"
_STATUS = {OK: DELIVERED, FAILED: FAILED, None: PENDING}  # a batch's fate -> its recipients' status


@dataclasses.dataclass(frozen=True)
class Block:
    """Recipients of one batch that share every column but `user_id`: a batch's rows, or a part of them."""

    job_id: str
    job_hash: str | None  # None: a job whose lines carry none (never sent)
    users: Sequence[str]
    status: str  # delivered, failed or pending
    error_code: int | None  # the reply's ErrorCode; None for a transport fault, or never sent
    error_info: str | None
    meaning: str
    attempts: int  # requests made for the batch
    last_at: str | None  # its latest line's time (ISO 8601, UTC); None: never sent


class Sink(Protocol):
    """Where the rows go (`observe.tables`): a table file in one format."""

    def add(self, block: Block) -> None: ...
    def close(self) -> None: ...


# More rows, from elsewhere than the journal (`left_out`, from the jobs): given the first pass and the
# planned batches listed, the rows of what the journal names nobody for.
More = Callable[[FirstPass, set[tuple[int, int]]], Iterator[Block]]


def write_recipients(
    sink: Sink, *paths: str | os.PathLike[str] | JournalURI, more: More | None = None
) -> collections.Counter[str]:
    """Write every named recipient of the journals' run to `sink`, in the journals' order, then the
    planned batches never sent, then `more`; return the rows written by status."""
    written: collections.Counter[str] = collections.Counter()
    with reading(paths) as sources:
        for block in blocks(sources, more):
            sink.add(block)
            written[block.status] += len(block.users)
    return written


def blocks(sources: Sources, more: More | None = None) -> Iterator[Block]:
    first = first_pass(sources)
    jobs = first.jobs
    latest: dict[Place, tuple[int, int]] = {}
    held_from: dict[Place, tuple[int, int]] = {}
    for key, (_fate, place) in first.fates.items():
        latest[place] = key
        batch = jobs.batches[key]
        if batch.first != place and not batch.latest_whole:
            held_from[batch.first] = key
    held: dict[tuple[int, int], list[str]] = {}
    for place, doc in journal_records(sources):
        starts = held_from.get(place)
        if starts is not None:
            held[starts] = list(doc.get("recipients") or ())
        ends = latest.get(place)
        if ends is not None:
            yield from _of_batch(first, ends, doc, held.pop(ends, None))
    named: set[tuple[int, int]] = set()
    yield from _unsent(sources, first, named)
    if more is not None:
        yield from more(first, named)


def _of_batch(first: FirstPass, key: tuple[int, int], doc: dict[str, Any], whole: list[str] | None) -> Iterator[Block]:
    """The rows of a batch, from its latest line (`whole`: its first line's recipients, if that names more)."""
    info = first.jobs.all[key[0]]
    batch = first.jobs.batches[key]
    recipients = whole if whole is not None else doc.get("recipients")
    if not isinstance(recipients, list):  # a batch to all members: nobody to name
        return
    fate, _place = first.fates[key]
    at = doc.get("at") if isinstance(doc.get("at"), str) else None
    info_text = doc.get("error_info") or None
    errors = doc.get("recipient_errors")
    row = _Shared(info.job_id, info.job_hash, batch.lines, at)
    if fate == OK or not isinstance(errors, dict):
        code = _code(doc.get("error_code"))
        yield row(
            recipients, _STATUS.get(fate, PENDING), code, None if fate == OK else info_text, meaning(reason_of(doc))
        )
        return
    # batchsendmsg: recipient_errors names every recipient not delivered, with its last code; a retry's
    # `resend` those it sends again (pending), the others failed for good.
    again = set(doc.get("resend") or ()) if fate is None and doc.get("status") == RETRY else set()
    delivered = [user for user in recipients if user not in errors]
    if delivered:
        yield row(delivered, DELIVERED, 0, None, meaning("0"))
    groups: dict[tuple[str, int | None, str], list[str]] = {}
    for user, raw in errors.items():
        status = PENDING if user in again else FAILED
        groups.setdefault((status, _code(raw), code_key(raw)), []).append(user)
    for (status, code, counted), users in groups.items():
        yield row(users, status, code, None, meaning(counted))


@dataclasses.dataclass(frozen=True)
class _Shared:
    """The columns every row of a batch shares."""

    job_id: str
    job_hash: str | None
    attempts: int
    last_at: str | None

    def __call__(self, users: Sequence[str], status: str, code: int | None, info: str | None, text: str) -> Block:
        return Block(self.job_id, self.job_hash, users, status, code, info, text, self.attempts, self.last_at)


def _unsent(sources: Sources, first: FirstPass, named: set[tuple[int, int]]) -> Iterator[Block]:
    """The planned batches no line names (a run in PostgreSQL): pending, never sent (added to `named`)."""
    jobs = first.jobs
    for source in sources:
        for left in unsent_of(source):
            found = jobs.find(left.job_id, left.job_hash)
            if found is None or jobs.all[found].rejected is not None or (found, left.batch) in first.fates:
                continue
            named.add((found, left.batch))
            if left.recipients is not None:
                yield Block(left.job_id, left.job_hash, left.recipients, PENDING, None, None, NOT_SENT, 0, None)


def _code(raw: object) -> int | None:
    """An ErrorCode as the table's integer column holds it (None for a transport fault)."""
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None
