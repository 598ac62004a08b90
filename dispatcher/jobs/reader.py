"""Reading and validating jobs (of every API: dispatcher.tim.apis) from JSONL, one job at a time.

A job is validated whole before any of it is sent; a bad job becomes a `Rejection` naming the file,
the line and the field, and the other jobs go on. Above all, no mistake may widen who is notified:
an unknown key, a `null`, an empty list or an empty export file is a rejection, never "all members".

Every input is read in chunks, never a whole line at a time: a line longer than any valid line is
rejected as soon as that is known, so a jobs file without newlines or an export that is really
`/dev/zero` costs a bounded amount of memory.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import io
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Protocol, cast

import orjson

from dispatcher.core.job import InlineRecipients, Job, Recipients, place
from dispatcher.errors import InputError, quoted
from dispatcher.jobs import sources
from dispatcher.jobs.files import Kept, Stopped
from dispatcher.jobs.sources import StreamedExport
from dispatcher.jobs.userids import user_ids
from dispatcher.tim.apis import DEFAULT, DEFAULT_ENDPOINT, REGISTRY, Endpoint
from dispatcher.tim.apis.base import Reject, Spec, string, type_name

if TYPE_CHECKING:
    import hashlib

    from dispatcher.core.export import Stats
    from dispatcher.jobs.exports import Read
    from dispatcher.jobs.streamed import StreamedRead

__all__ = ["Rejection", "StreamedExport", "read_jobs"]

STDIN = "-"
SENDER = "From_Account"  # the message APIs' sender, never hinted for a key that names no sender
_NAMED = ("recipients_file", "recipients_query")  # the lists a job may name in place of its inline one
KNOWN_KEYS = DEFAULT_ENDPOINT.keys  # of a job without "api"; every API's own are its endpoint's `keys`

# The longest jobs line read; a longer one is rejected and skipped without being held. A job is usually
# far shorter (Content is at most 12 KiB; long recipient lists belong in a recipients_file), but a
# million UserIDs given inline take tens of MB, and the bound leaves room for that.
MAX_JOB_LINE_BYTES = 64 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024


_Stopped = Stopped  # set `stop`: reading ends where it is, and the job being read is not yielded


def _chunks(read: Callable[[int], bytes], stop: threading.Event | None = None) -> Iterator[bytes]:
    """A stream in chunks of at most 64 KiB, without a leading UTF-8 byte-order mark.

    `read` returns what is there (read1), so a pipe's jobs are handed on as they arrive rather than
    when 64 KiB have gathered. Spreadsheet exports often start with a BOM; kept, it would become part
    of the first UserID, which then is never notified while its batch is recorded `ok`.

    Once `stop` is set it raises _Stopped rather than ending, so a stopped read is never taken for the
    end of an export (which would accept a job with half its recipients).
    """
    head: bytes | None = b""  # the first bytes, until there are enough to tell whether they are a BOM
    while True:
        if stop is not None and stop.is_set():
            raise _Stopped
        chunk = read(_CHUNK_BYTES)
        if not chunk:
            break
        if head is not None:
            head += chunk
            if len(head) < len(codecs.BOM_UTF8):  # a pipe may hand them over a byte at a time
                continue
            chunk, head = head.removeprefix(codecs.BOM_UTF8), None
        yield chunk
    if head:  # the whole input is shorter than a BOM
        yield head


def _lines(chunks: Iterable[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines without their line ending (`\n` or `\r\n`), holding at most one line of `limit` bytes.

    A longer line is yielded as None as soon as it is known to be too long, before the rest of it is read;
    if the caller goes on, the rest of it is skipped up to the next newline without being kept.
    """
    done = 0  # lines ended so far
    parts: list[bytes] = []  # the start of a line not ended yet, from earlier chunks
    size = 0
    skipping = False  # inside a line already yielded as too long
    for chunk in chunks:
        *ended, rest = chunk.split(b"\n")
        for line in ended:
            done += 1
            if skipping:
                skipping = False
                continue
            if parts:
                parts.append(line)
                line = b"".join(parts)
                parts, size = [], 0
            line = line.removesuffix(b"\r")  # inline, not in a helper: this runs for each of a million lines
            yield done, (line if len(line) <= limit else None)
        if rest and not skipping:
            parts.append(rest)
            size += len(rest)
            if size > limit + 1:  # too long even if its last byte is the \r of a \r\n
                yield done + 1, None
                parts, size, skipping = [], 0, True
    if parts:  # a last line without a newline
        line = b"".join(parts).removesuffix(b"\r")
        yield done + 1, (line if len(line) <= limit else None)


@dataclasses.dataclass(frozen=True)
class Rejection:
    job_id: str
    file: str
    line: int
    field: str | None
    reason: str
    group_id: str | None = None
    api: str | None = None  # the API the job named, when known and not send_group_system_notification
    exit_code: int = 1  # Reject's: 2 when what the job names could not be read (the run then exits 2)

    @property
    def source(self) -> str:
        return place(self.file, self.line)

    @property
    def message(self) -> str:
        where = f"{self.source}: field {self.field}" if self.field else self.source
        return f"{where}: {self.reason}"


def _endpoint(doc: dict[str, object]) -> Endpoint:
    """The API a job names in "api"; a job without it means send_group_system_notification."""
    if "api" not in doc:
        return REGISTRY[DEFAULT]
    name = doc["api"]
    if not isinstance(name, str):
        raise Reject("api", f"must be a string, not {type_name(name)}")
    endpoint = REGISTRY.get(name)
    if endpoint is None:
        # Case and the path's prefix (v4/openim/...) aside, as an operator copying the docs writes it.
        plain = name.strip().lower().rsplit("/", 1)[-1]
        close = [plain] if plain in REGISTRY else difflib.get_close_matches(plain, list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise Reject("api", f"unknown API {quoted(name)}{hint}; known: {', '.join(REGISTRY)}")
    return endpoint


def _inline(value: object, field: str = "ToMembers_Account", all_members: bool = True) -> tuple[str, ...]:
    """The UserIDs of a list, each once, in order (the list's length tells the duplicates left out)."""
    if not isinstance(value, list):
        raise Reject(field, f"must be an array of UserIDs, not {type_name(value)}")
    if not value:
        raise Reject(field, "is empty; leave the field out to notify all members" if all_members else "is empty")
    return tuple(dict.fromkeys(user_ids(value, field)))  # drops duplicates, keeps the first of each in order


@dataclasses.dataclass(frozen=True)
class Streamed:
    """Recipients given from Python as an iterable other than a list (a generator of millions of
    UserIDs, say): read once, in bounded memory, when the job is validated (`jobs.streamed`)."""

    ids: Iterable[object]


def parse_job(
    raw: bytes,
    file: str,
    line: int,
    base_dir: Path,
    batch_size: int,
    rejection_id: str,
    *,
    stop: threading.Event | None = None,
    streams: bool = True,
    on_rows: RowsRead | None = None,
    kept: Kept | None = None,
) -> Job | Rejection:
    """Validate one JSONL line. A job without a job_id gets one made from its content; if it is
    rejected, `rejection_id` (its file name and line) names it instead, for the record only.
    `kept`: where the run keeps the rows of the queries it runs (None: nowhere).

    Raises _Stopped if `stop` is set while its recipients_file is read.
    """
    try:
        doc = orjson.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Rejection(rejection_id, file, line, None, "line is not valid UTF-8")
    except orjson.JSONDecodeError as exc:
        return Rejection(rejection_id, file, line, None, f"line is not valid JSON ({exc.msg})")
    if not isinstance(doc, dict):
        return Rejection(rejection_id, file, line, None, f"line must be a JSON object, not {type_name(doc)}")
    return parse_doc(
        doc, file, line, base_dir, batch_size, rejection_id, stop=stop, streams=streams, on_rows=on_rows, kept=kept
    )


def parse_doc(
    doc: dict[str, object],
    file: str,
    line: int,
    base_dir: Path,
    batch_size: int,
    rejection_id: str,
    *,
    stop: threading.Event | None = None,
    streams: bool = True,
    on_rows: RowsRead | None = None,
    kept: Kept | None = None,
) -> Job | Rejection:
    """Validate one job, as a line of a jobs file gives it (a JSON object) or Python does (`jobs.memory`:
    a dict whose recipients may be `Streamed`). The rules are the same for both."""
    given_id: str | None = None
    group_id: str | None = None
    api_name: str | None = None  # for the record of a rejection (lines of notifications name no api)
    try:
        if isinstance(doc.get("job_id"), str) and doc["job_id"]:
            given_id = cast(str, doc["job_id"])
        if isinstance(doc.get("GroupId"), str):
            group_id = quoted(doc["GroupId"], bare=True)  # a valid one is never cut: at most 48 bytes
        endpoint = _endpoint(doc)
        api_name = endpoint.name if endpoint.names_api else None
        known = endpoint.keys
        unknown = [key for key in doc if key not in known]
        if unknown and unknown[0] in endpoint.reserved:
            raise Reject(unknown[0], endpoint.reserved[unknown[0]])
        bad_key = quoted(unknown[0], bare=True) if unknown else ""
        if unknown:  # the first, in the line's order
            close = difflib.get_close_matches(unknown[0], known, n=1)
            if close == [SENDER] and "from" not in unknown[0].lower():
                # ToAccount, To_Accounts, Member_Account are spelt like From_Account, but the sender is
                # nobody's recipient: the hint would send from the account meant to receive.
                close = []
            hint = f" (did you mean {close[0]}?)" if close else ""
            shown_keys = [k for k in known if k != "api"] if endpoint.name == DEFAULT else list(known)
            raise Reject(bad_key, f"unknown key{hint}; known keys: {', '.join(shown_keys)}")
        inline_key = endpoint.recipients_key
        iterables = [key for key, value in doc.items() if isinstance(value, Streamed) and key != inline_key]
        if iterables:  # only a job given from Python has any
            only = f" (only {inline_key} may be one)" if inline_key is not None else ""
            raise Reject(iterables[0], f"must be a JSON value, not an iterable{only}")
        string(doc, "job_id")
        spec = endpoint.validate(doc)
        given_list = next((key for key in _NAMED if key in doc), None)  # recipients_file or recipients_query
        if inline_key is None and given_list is not None:
            raise Reject(given_list, f"{endpoint.name} takes no recipients")
        if inline_key is not None and inline_key in doc and given_list is not None:
            raise Reject(given_list, f"cannot be given together with {inline_key}")
        named = inline_key is not None and (inline_key in doc or given_list is not None)
        if endpoint.recipients_required and not named:
            raise Reject(inline_key, "is required (or recipients_file), with the accounts to send to")
        export = sources.spec_of(doc, inline=inline_key is not None and inline_key in doc, kept=kept)
        digest = endpoint.hasher(spec, batch_size, not named)
        recipients: Recipients | None = None
        count = duplicates = excluded = 0
        stats: Stats | None = None
        sent_to: object = "all members"  # the recipients as the derived job_id sees them
        derived: str | None = None  # the default job_id, when made as the recipients were read
        given = doc.get(inline_key) if inline_key is not None else None
        if inline_key is not None and isinstance(given, Streamed):
            got = _read_streamed(given, endpoint, spec, inline_key, export, base_dir, digest, file, line, stop, streams)
            recipients, count, digest, stats = got.recipients, got.count, got.digest, got.stats
            duplicates, excluded, derived = got.duplicates, got.excluded, got.job_id
        elif inline_key is not None and inline_key in doc:
            inline = _inline(given, inline_key, not endpoint.recipients_required)
            duplicates = len(cast(list[object], given)) - len(inline)
            if export is None:
                for uid in inline:
                    digest.update(uid.encode("utf-8") + b"\n")
                recipients, count, sent_to = InlineRecipients(inline), len(inline), inline
            else:  # an exclude_file applies to the list
                read = _read_export(export, base_dir, digest, file, line, stop, streams, inline, on_rows)
                assert isinstance(read.recipients, tuple)
                recipients, count, digest, stats = (
                    InlineRecipients(read.recipients),
                    read.count,
                    read.digest,
                    read.stats,
                )
                excluded, sent_to = read.stats.excluded, {inline_key: list(inline), **read.derived}
        elif export is not None:
            read = _read_export(export, base_dir, digest, file, line, stop, streams, on_rows=on_rows)
            assert not isinstance(read.recipients, tuple)
            recipients, count, digest, stats = read.recipients, read.count, read.digest, read.stats
            duplicates, excluded, sent_to = read.stats.duplicates, read.stats.excluded, read.derived
        endpoint.check_recipients(spec, doc, recipients is not None)
    except Reject as rej:
        return Rejection(given_id or rejection_id, file, line, rej.field, rej.reason, group_id, api_name, rej.exit_code)
    job_id = given_id or derived or endpoint.derived_id(spec, sent_to)
    return Job(
        job_id,
        file,
        line,
        spec.group_id,
        spec.group_type,
        recipients,
        count,
        batch_size,
        digest.hexdigest(),
        derived_id=given_id is None,
        endpoint=endpoint,
        fields=spec.fields,
        duplicates=duplicates,
        excluded=excluded,
        export=stats,
    )


def _read_export(
    export: sources.Spec,
    base_dir: Path,
    digest: hashlib.blake2b,
    file: str,
    line: int,
    stop: threading.Event | None,
    streams: bool,
    inline: tuple[str, ...] | None = None,
    on_rows: RowsRead | None = None,
) -> Read:
    """The job's export, read (`exports`, imported only when a job names one: it brings numpy)."""
    from dispatcher.jobs.exports import ExportError, read_export

    try:
        return read_export(export, base_dir, digest, inline=inline, stop=stop, streams=streams, on_rows=on_rows)
    except ExportError as exc:  # nothing of the job is sent, and the run cannot go on as it is
        raise ExportError(f"{place(file, line)}: {exc}") from None


def _read_streamed(
    given: Streamed,
    endpoint: Endpoint,
    spec: Spec,
    field: str,
    export: sources.Spec | None,
    base_dir: Path,
    digest: hashlib.blake2b,
    file: str,
    line: int,
    stop: threading.Event | None,
    streams: bool,
) -> StreamedRead:
    """Recipients given as an iterable, read (`streamed`, imported only then: it brings numpy)."""
    from dispatcher.jobs.exports import ExportError
    from dispatcher.jobs.streamed import read_streamed

    try:
        return read_streamed(given.ids, endpoint, spec, field, export, base_dir, digest, stop=stop, streams=streams)
    except ExportError as exc:  # a temporary file cannot be written: the run cannot go on as it is
        raise ExportError(f"{place(file, line)}: {exc}") from None


def api_of(job: Job) -> str | None:
    """The API a job's records name: None for send_group_system_notification, whose lines name none."""
    return job.endpoint.name if job.endpoint.names_api else None


# Told of the rows read (lines of a jobs file, rows of an export), as they are read, in the reader's thread.
RowsRead = Callable[[int], None]
# Told of a jobs file that became shorter while it was read: its name, the bytes read, its size at open.
CutShort = Callable[[str, int, int], None]


def _job_lines(path: str, stop: threading.Event | None, on_cut: CutShort | None) -> Iterator[tuple[int, bytes | None]]:
    """The numbered lines of a jobs file, None for a line over MAX_JOB_LINE_BYTES.

    A regular file that ends before the size it had when opened was cut short in place meanwhile (a
    job that rewrites it): the jobs after the cut are never read, so nothing of them is on record,
    and `on_cut` is told once the end is reached.
    """
    if path == STDIN:
        stdin = cast(io.BufferedReader, sys.stdin.buffer)  # typed BinaryIO, which does not declare read1
        yield from _lines(_chunks(stdin.read1, stop), MAX_JOB_LINE_BYTES)
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, also on early exit
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with stream:
        st = os.fstat(stream.fileno())
        read = 0

        def counted(size: int) -> bytes:
            nonlocal read
            data = stream.read1(size)
            read += len(data)
            return data

        yield from _lines(_chunks(counted, stop), MAX_JOB_LINE_BYTES)
        if S_ISREG(st.st_mode) and read < st.st_size and on_cut is not None:
            on_cut(shown(path), read, st.st_size)


def api_names(paths: Iterable[str], *, stop: threading.Event | None = None) -> set[str]:
    """The APIs that the jobs of the regular files among `paths` name, for a run to check each API's
    budget before its first request. Cheap: a line is parsed only if it may name an API; any other
    line counts as send_group_system_notification, what a job without "api" means (a line the run
    will reject may open a budget it then does not use). Streams are left alone, to be read once
    by the run, and so are files that cannot be read (the run says so) and names that are not an
    API (the run rejects their jobs). Setting `stop` ends it with what it found so far."""
    names: set[str] = set()
    for path in paths:
        try:
            if path == STDIN or not S_ISREG(os.stat(path).st_mode):
                continue
            for _, raw in _job_lines(path, stop, None):
                if raw is None or not raw or raw.isspace():
                    continue
                # A key may be written with escapes ("\u0061pi"): such a line is parsed too.
                if b'"api"' not in raw and b"\\u" not in raw:
                    names.add(DEFAULT)
                    continue
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                name = doc.get("api", DEFAULT) if isinstance(doc, dict) else None
                if isinstance(name, str) and name in REGISTRY:
                    names.add(name)
        except (OSError, InputError):
            continue
        except _Stopped:
            break
    return names


def shown(path: str | os.PathLike[str]) -> str:
    """A path as it is shown and recorded. A name that is not UTF-8 reaches Python with its bytes kept
    as surrogates, which cannot be written as JSON; they are shown as U+FFFD instead."""
    return os.fsencode(path).decode("utf-8", "replace")


def label_of(path: str) -> str:
    """How a jobs file is named in the job_ids of rejected lines: its file name, or `stdin`."""
    return "stdin" if path == STDIN else shown(os.path.basename(path))


class JobsInput(Protocol):
    """Where a run's jobs come from: jobs files (`JobFiles`), or jobs held in memory (`memory.MemoryJobs`)."""

    def read(
        self,
        batch_size: int,
        *,
        stop: threading.Event | None = None,
        streams: bool = True,
        on_cut: CutShort | None = None,
        on_rows: RowsRead | None = None,
        kept: Kept | None = None,
    ) -> Iterator[Job | Rejection]:
        """Every job in order, validated, one at a time (see read_jobs)."""
        ...


@dataclasses.dataclass(frozen=True)
class JobFiles:
    """The jobs files of a run (`-`: standard input)."""

    paths: tuple[str, ...]

    def read(
        self,
        batch_size: int,
        *,
        stop: threading.Event | None = None,
        streams: bool = True,
        on_cut: CutShort | None = None,
        on_rows: RowsRead | None = None,
        kept: Kept | None = None,
    ) -> Iterator[Job | Rejection]:
        return read_jobs(self.paths, batch_size, stop=stop, streams=streams, on_cut=on_cut, on_rows=on_rows, kept=kept)


class JobIds:
    """The job_ids of a run's jobs so far: a job repeating one is rejected, naming where the first was."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def checked(self, item: Job | Rejection, rejection_id: str) -> Job | Rejection:
        """The job, or its rejection if its job_id is taken; `rejection_id` names a job that gave none."""
        first = self._seen.get(item.job_id)
        if first is None:
            self._seen[item.job_id] = item.source
            return item
        api_name = item.api if isinstance(item, Rejection) else api_of(item)
        if isinstance(item, Job) and item.derived_id:
            reason = (
                f"repeats the job_id of {first} ({item.job_id}): identical jobs without a job_id "
                "get the same id; give each a job_id if it is meant to be sent twice"
            )
            return Rejection(rejection_id, item.file, item.line, "job_id", reason, item.group_id, api_name)
        reason = f"repeats the job_id of {first}"
        return Rejection(item.job_id, item.file, item.line, "job_id", reason, item.group_id, api_name)


def read_jobs(
    paths: Iterable[str],
    batch_size: int,
    *,
    stop: threading.Event | None = None,
    streams: bool = True,
    on_cut: CutShort | None = None,
    on_rows: RowsRead | None = None,
    kept: Kept | None = None,
) -> Iterator[Job | Rejection]:
    """Stream every job of every file in order; never holds more than one job's line in memory.

    Setting `stop` (from another thread) ends the iteration within one chunk read or one line, also
    in the middle of an endless recipients stream; the job being read then is not yielded. With
    `streams` False, a recipients_file that can be read only once raises StreamedExport. `on_cut`
    hears of a jobs file that became shorter while it was read (see _job_lines); `on_rows` of the
    rows read, so that a display can show a long read going on. `kept`: where the run keeps the rows
    of each query it runs, for its resume (None: nowhere, as a dry run).
    """
    ids = JobIds()
    try:
        if kept is not None:
            from dispatcher.jobs.query import begin

            begin(kept)
        for path in paths:
            base_dir = Path.cwd() if path == STDIN else Path(path).parent
            label = label_of(path)
            name = shown(path)  # what job sources and rejections name it by; `path` is what is opened
            for line, raw in _job_lines(path, stop, on_cut):
                if stop is not None and stop.is_set():
                    return
                if on_rows is not None:
                    on_rows(1)
                item: Job | Rejection
                if raw is None:
                    reason = f"line is longer than {MAX_JOB_LINE_BYTES:,} bytes, the most a job line may have"
                    item = Rejection(f"{label}:{line}", name, line, None, reason)
                elif not raw or raw.isspace():
                    continue
                else:
                    item = parse_job(
                        raw,
                        name,
                        line,
                        base_dir,
                        batch_size,
                        f"{label}:{line}",
                        stop=stop,
                        streams=streams,
                        on_rows=on_rows,
                        kept=kept,
                    )
                yield ids.checked(item, f"{label}:{line}")
    except _Stopped:
        return
