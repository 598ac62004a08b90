"""Recipients given from Python as an iterable (a generator of millions of UserIDs, say), read once, when
their job is validated, in bounded memory: checked a part at a time as a list's items are
(`reader.user_ids`), copied to an anonymous temporary file that sending reads back, and their repeats
and the job's exclude_file found by `dedup`, as an export's are.

The job hash and the default job_id are those of the same job with its recipients as a list (in a jobs
file or from Python), so that a run of either resumes with the other. With an exclude_file they are not:
then the IDs' part of the hash covers every ID given, repeats included, and the default job_id that hash
(a list is de-duplicated before it is hashed, an iterable only once all of it is read).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import orjson

from dispatcher.core.export import Stats
from dispatcher.errors import said
from dispatcher.jobs import formats, sources
from dispatcher.jobs.dedup import Drops, Records, SpillError, clean_of, resolve
from dispatcher.jobs.exports import _HASH_MARK, ExportError, SpooledRecipients, kept_blocks
from dispatcher.jobs.files import EXCLUDE, Stopped
from dispatcher.jobs.inputs import spill_message, write
from dispatcher.jobs.userids import user_ids
from dispatcher.tim.apis.base import Endpoint, Reject, Spec

PART = 65_536  # UserIDs taken from the iterable at a time: what is held of it, besides the dedup's records
_MARK = "\x00recipients"  # stands for the list in a default job_id's document; a NUL is in no file name


@dataclasses.dataclass(frozen=True)
class StreamedRead:
    """Recipients read from an iterable: what to send, how many, the job's hash and default job_id."""

    recipients: SpooledRecipients
    count: int
    stats: Stats | None  # with an exclude_file, what was read (as for a list with one); else None, as a list's
    digest: hashlib.blake2b
    duplicates: int
    excluded: int
    job_id: str


def read_streamed(
    ids: Iterable[object],
    endpoint: Endpoint,
    spec: Spec,
    field: str,
    export: sources.Spec | None,
    base_dir: Path,
    digest: hashlib.blake2b,
    *,
    stop: threading.Event | None = None,
    streams: bool = True,
) -> StreamedRead:
    """Read a job's recipients from `ids` (its `field`), apply its exclude_file (`export`), and finish the
    job hash that `digest` starts. Raises Reject (the job is refused), ExportError (exit 2) and Stopped."""
    drops = Drops()
    records = Records(drops, stop)
    exclude = None if export is None else export.exclude
    exclusions = None if exclude is None else Records(None, stop)
    spool: IO[bytes] | None = None
    try:
        spool = _temporary(field)
        given = hashlib.blake2b(digest_size=16)  # every ID as given, for the hash of a job with an exclude_file
        rows = 0
        items = iter(ids)
        while True:
            if stop is not None and stop.is_set():
                raise Stopped
            try:
                part = list(itertools.islice(items, PART))
            except Exception as exc:  # the caller's iterable failed (a lost database cursor): nothing of it goes
                raise Reject(field, f"raised {type(exc).__name__} after {rows:,} UserIDs: {said(exc)}") from None
            if not part:
                break
            # No checked ID holds a newline (nor any white space at its ends): one a line, as a file's.
            data = ("\n".join(user_ids(part, field, rows)) + "\n").encode("utf-8")
            write(spool, data, field)
            records.add(clean_of(data))
            given.update(data)
            rows += len(part)
        if not rows:
            all_members = not endpoint.recipients_required
            raise Reject(field, "is empty; leave the field out to notify all members" if all_members else "is empty")
        exclude_files: list[str] = []
        named: list[bytes] = []
        exclude_rows = 0
        if exclude is not None and exclusions is not None:
            for source in sources.resolve(exclude, base_dir, streams=streams):
                hashed = hashlib.blake2b(digest_size=16)
                for block in formats.REGISTRY[source.format].read(source, exclude, stop, _unused):
                    exclusions.add(block)
                    hashed.update(block.data)
                    exclude_rows += block.rows
                exclude_files.append(source.name)
                named.append(orjson.dumps([exclude.field, source.name]) + hashed.digest())
        outcome = resolve(records, drops, exclusions, stop)
        if exclude is not None and export is not None:
            if not outcome.recipients:
                raise Reject(
                    EXCLUDE, f"every recipient ({outcome.distinct:,}) is in {exclude.label}; nothing is left to send"
                )
            # As a list's with an exclude_file (exports.read_export), but over the IDs as given.
            digest.update(_HASH_MARK + orjson.dumps(export.derived(), option=orjson.OPT_SORT_KEYS) + b"\n")
            digest.update(b"inline" + given.digest())
            for part_hash in named:
                digest.update(part_hash)
            job_id = endpoint.derived_id(spec, {field: given.hexdigest(), **export.derived()})
            stats = Stats((), outcome.rows, outcome.distinct, outcome.excluded, (), tuple(exclude_files), exclude_rows)
        else:
            job_id = _hash_kept(spool, outcome.drops, endpoint, spec, digest, field, stop)
            stats = None
        try:
            spool.flush()
        except OSError as exc:
            raise ExportError(spill_message(field, exc)) from None
        recipients = SpooledRecipients(spool, field, outcome.drops)
        return StreamedRead(recipients, outcome.recipients, stats, digest, outcome.duplicates, outcome.excluded, job_id)
    except SpillError as exc:
        _discard(spool)
        raise ExportError(spill_message(field, exc)) from None
    except BaseException:
        _discard(spool)
        raise
    finally:
        records.close()
        if exclusions is not None:
            exclusions.close()


def _hash_kept(
    spool: IO[bytes],
    drops: bytes | None,
    endpoint: Endpoint,
    spec: Spec,
    digest: hashlib.blake2b,
    field: str,
    stop: threading.Event | None,
) -> str:
    """Feed the job hash the recipients sent, each once, in order, as a list's are; and make the default
    job_id as a list's, its document written around them (`derived_doc`, the list last in it)."""
    document = endpoint.derived_doc(spec, [_MARK])
    cut = document.rindex(orjson.dumps(_MARK))
    derived = hashlib.blake2b(document[:cut], digest_size=8)
    first = True
    for data in kept_blocks(spool, drops, field, stop):
        digest.update(data)
        derived.update(b"" if first else b",")
        derived.update(_json_items(data))
        first = False
    derived.update(document[cut + len(orjson.dumps(_MARK)) :])
    return "auto-" + derived.hexdigest()


def _json_items(data: bytes) -> bytes:
    """UserIDs one a line, as the items of a JSON array (`"a","b"`), exactly as orjson writes them."""
    if b'"' not in data and b"\\" not in data:  # nothing to escape: an ID holds no control character
        return b'"' + data[:-1].replace(b"\n", b'","') + b'"'
    return b",".join(orjson.dumps(uid) for uid in data[:-1].decode("utf-8").split("\n"))


def _temporary(label: str) -> IO[bytes]:
    try:
        return tempfile.TemporaryFile()  # the job keeps it open for sending
    except OSError as exc:
        raise ExportError(spill_message(label, exc)) from None


def _discard(spool: IO[bytes] | None) -> None:
    if spool is not None:
        with contextlib.suppress(OSError):
            spool.close()


def _unused(_column: str) -> None:
    """The column of a suppression list's file: not shown."""
