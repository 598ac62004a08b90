"""What the journal cannot name, read again from the jobs: an export's duplicates and excluded rows,
and the recipients of batches a file journal never sent (`report --recipients FILE --jobs JOBS`).

The journal keeps an export's counts, not who was left out, and a file journal has no line for a batch
never sent. The jobs file does: each job's export is read again, as `send` reads it, and it is taken only
if its job hash is the journal's. The hash covers every file's rows and the batch size, so the rows
read are the rows the run sent from, and batch `i` is the same recipients; an export changed since
(or another --batch-size) is refused. Memory stays bounded as in sending: the export is spooled to a
temporary file, and its duplicates are found again by `dedup`, one bit a row.

A query's rows are read from the run's copy (`copies_of`), never from the database again: the table may
have changed since, and the report must not depend on the warehouse. A report only reads the copies. A
query with no copy (a dry run's journal, a copy deleted) runs again, keeping nothing, and its job is taken
only if its hash, which covers the rows, is still the journal's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dispatcher.errors import InputError
from dispatcher.jobs.dedup import Drops, Records, clean_of, resolve
from dispatcher.jobs.exports import SpooledRecipients
from dispatcher.jobs.files import Kept, beside
from dispatcher.jobs.reader import Rejection, read_jobs
from dispatcher.journal.uri import JournalURI
from dispatcher.observe.passes import NOT_SENT, FirstPass
from dispatcher.observe.recipients import PENDING, Block

DUPLICATE, EXCLUDED = "duplicate", "excluded"
DUPLICATE_MEANING = "a repeat of a UserID earlier in the export: sent once, to its first row"
EXCLUDED_MEANING = "in the job's exclude_file: never sent"
_CHUNK = 1 << 20


def copies_of(journals: Sequence[str | os.PathLike[str] | JournalURI]) -> Kept | None:
    """Where the runs of `journals` kept their queries' rows, only to be read: beside each file journal,
    in each PostgreSQL journal's database. The last journal given is looked in first, as its lines
    are the latest; a copy of another run's that is not the job's is refused by the job hash."""
    places = [
        Kept(conninfo=j.conninfo, journal=j.name, reuse=True, read_only=True)
        if isinstance(j, JournalURI)
        else Kept(directory=beside(Path(j)), reuse=True, read_only=True)
        for j in reversed(journals)
    ]
    return dataclasses.replace(places[0], also=tuple(places[1:])) if places else None


def left_out(
    jobs_files: Iterable[str], batch_size: int, kept: Kept | None, first: FirstPass, named: set[tuple[int, int]]
) -> Iterator[Block]:
    """The rows of the jobs' exports the journal names nobody for: duplicates, excluded, and the
    recipients of batches in neither `first`'s fates nor `named` (the planned batches listed). `kept`:
    the run's copies of its queries' rows (`copies_of`), only read."""
    journal_ids = {info.job_id for info in first.jobs.all if not info.merged}
    sent: dict[int, set[int]] = {}
    for job, batch in (*first.fates, *named):
        sent.setdefault(job, set()).add(batch)
    sending = {first.jobs.all[job].job_id for job, _batch in (*first.fates, *named)}
    assert kept is None or kept.read_only  # a report never writes, replaces or removes a copy
    for item in read_jobs(jobs_files, batch_size, kept=kept):
        if isinstance(item, Rejection):
            if item.job_id in sending:  # sent, and now unreadable (an export gone): its rows would be missing
                raise InputError(f"job {item.job_id!r} of the journal cannot be read again: {item.message}")
            continue  # rejected in the run too: it sent nothing
        if item.job_id not in journal_ids:
            continue  # a job the journal holds nothing of: it is not in the report either
        recipients = item.recipients
        uid = first.jobs.find(item.job_id, item.job_hash)
        if uid is None:
            if isinstance(recipients, SpooledRecipients):
                recipients.spool.close()
            raise InputError(
                f"{item.source}: job {item.job_id!r} is not the job the journal holds (its job hash differs): "
                f"its export changed since the run, or the run had another --batch-size than {batch_size}"
            )
        if not isinstance(recipients, SpooledRecipients):
            continue  # a list in the job: its duplicates were dropped as it was read, and it has no export
        try:
            yield from _rows(item.job_id, item.job_hash, recipients, batch_size, sent.get(uid, set()))
        finally:
            recipients.spool.close()


def _rows(job_id: str, job_hash: str, export: SpooledRecipients, size: int, sent: set[int]) -> Iterator[Block]:
    spool = export.spool
    dropped, repeats = export.drops, _repeats(export)
    row = kept = 0
    spool.seek(0)
    carry = b""
    while chunk := spool.read(_CHUNK):
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        data, carry = data[:cut], data[cut:]
        users = np.array(data.decode("utf-8").split("\n")[:-1], dtype=object)
        n = len(users)
        gone = _slice(dropped, row, n)
        again = _slice(repeats, row, n)
        excluded = gone & ~again
        index = kept + np.cumsum(~gone) - 1  # each kept row's place among those sent: its batch
        unsent = ~gone & ~np.isin(index // size, list(sent))
        for mask, status, meaning in (
            (again, DUPLICATE, DUPLICATE_MEANING),
            (excluded, EXCLUDED, EXCLUDED_MEANING),
            (unsent, PENDING, NOT_SENT),
        ):
            if mask.any():
                yield Block(job_id, job_hash, users[mask].tolist(), status, None, None, meaning, 0, None)
        row += n
        kept += int((~gone).sum())


def _repeats(export: SpooledRecipients) -> bytes | None:
    """The rows that repeat an earlier one (the dropped rows less the excluded ones), found again."""
    if export.drops is None:
        return None
    drops = Drops()
    records = Records(drops)
    try:
        spool = export.spool
        spool.seek(0)
        carry = b""
        while chunk := spool.read(_CHUNK):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            records.add(clean_of(data[:cut]))
            carry = data[cut:]
        return resolve(records, drops, None).drops
    finally:
        records.close()


def _slice(bitmap: bytes | None, row: int, n: int) -> npt.NDArray[np.bool_]:
    """Rows `row` to `row + n` of a bitmap (bit i of byte i // 8: row i), as booleans; unpacked a
    chunk at a time, so that memory holds a bit a row of the export, not a byte."""
    if bitmap is None:
        return np.zeros(n, bool)
    low = row >> 3
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8)[low : (row + n + 7) >> 3], bitorder="little")
    part = bits[row - 8 * low : row - 8 * low + n].astype(bool)
    return part if len(part) == n else np.concatenate([part, np.zeros(n - len(part), bool)])
