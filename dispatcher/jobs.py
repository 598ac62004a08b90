"""Reading and validating notification jobs from JSONL, one job at a time.

A job is validated whole before any of it is sent; a bad job becomes a `Rejection` naming the file,
the line and the field, and the other jobs go on. Above all, no mistake may widen who is notified:
an unknown key, a `null`, an empty list or an empty export file is a rejection, never "all members".
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import orjson

from dispatcher import api
from dispatcher.errors import InputError

STDIN = "-"
KNOWN_KEYS = ("GroupId", "Content", "ToMembers_Account", "recipients_file", "TopicId", "job_id", "group_type")
_KNOWN = frozenset(KNOWN_KEYS)


class Recipients(Protocol):
    """The de-duplicated recipients of a job, in file order; iterable more than once."""

    def __iter__(self) -> Iterator[str]: ...


@dataclasses.dataclass(frozen=True)
class InlineRecipients:
    ids: tuple[str, ...]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)


@dataclasses.dataclass(frozen=True)
class FileRecipients:
    """Recipients streamed from an export file, read again for sending rather than held in memory.

    Validation read the file once; `skip` holds the line numbers of duplicates, and `size`/`mtime_ns`
    make sure the file we send from is the file we validated.
    """

    path: Path
    size: int
    mtime_ns: int
    skip: frozenset[int]

    def __iter__(self) -> Iterator[str]:
        try:
            stat = self.path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (self.size, self.mtime_ns):
                raise InputError(f"{self.path}: changed after it was validated; nothing of this job was sent")
            handle = self.path.open("rb")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read: {exc.strerror}") from None
        with handle:
            for lineno, raw in enumerate(handle, 1):
                text = raw.strip()
                if text and lineno not in self.skip:
                    yield text.decode("utf-8")


@dataclasses.dataclass(frozen=True)
class Job:
    job_id: str
    file: str
    line: int
    group_id: str
    content: str
    topic_id: str | None
    group_type: str | None
    recipients: Recipients | None  # None: all members of the group
    recipient_count: int  # named recipients after de-duplication; 0 for all members
    batch_size: int
    job_hash: str

    @property
    def batches(self) -> int:
        if self.recipients is None:
            return 1
        return -(-self.recipient_count // self.batch_size)

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Rejection:
    job_id: str
    file: str
    line: int
    field: str | None
    reason: str
    group_id: str | None = None

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def message(self) -> str:
        where = f"{self.source}: field {self.field}" if self.field else self.source
        return f"{where}: {self.reason}"


class _Reject(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _hasher(group_id: str, content: str, topic_id: str | None, batch_size: int, all_members: bool) -> hashlib.blake2b:
    return hashlib.blake2b(orjson.dumps([group_id, content, topic_id, all_members, batch_size]), digest_size=16)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__.replace("str", "string").replace("dict", "object")


def _string(doc: dict[str, object], key: str, *, required: bool = False) -> str | None:
    if key not in doc:
        if required:
            raise _Reject(key, "is required")
        return None
    value = doc[key]
    if not isinstance(value, str):
        raise _Reject(key, f"must be a string, not {_type_name(value)}")
    if not value:
        raise _Reject(key, "must not be empty")
    return value


def _inline(value: object) -> tuple[str, ...]:
    field = "ToMembers_Account"
    if not isinstance(value, list):
        raise _Reject(field, f"must be an array of UserIDs, not {_type_name(value)}")
    if not value:
        raise _Reject(field, "is empty; leave the field out to notify all members")
    for i, uid in enumerate(value):
        problem = api.user_id_problem(uid)
        if problem:
            raise _Reject(field, f"item {i} ({uid!r}): UserID {problem}")
    return tuple(dict.fromkeys(value))  # drops duplicates, keeps the first of each in order


def _from_file(path: Path, label: str, digest: hashlib.blake2b) -> tuple[FileRecipients, int]:
    """Read an export once: validate every line, find duplicates, and feed the job hash."""
    field = "recipients_file"
    try:
        stat = path.stat()
        handle = path.open("rb")
    except OSError as exc:
        raise _Reject(field, f"{label}: cannot read: {exc.strerror}") from None
    # A dict, not a set: a dict of strings is not tracked by the garbage collector, while a young
    # set of a million UserIDs made every collection in the sending thread visit them all (96 ms).
    seen: dict[str, None] = {}
    skip: list[int] = []
    with handle:
        for lineno, raw in enumerate(handle, 1):
            if not lineno % 1000:
                # This runs in the reader thread while the event loop sends. Each buffered read
                # lets go of the GIL and takes it straight back, which keeps the loop from ever
                # forcing a switch: it waited 100-250 ms at a time for a million-line export.
                # Sleeping hands the GIL over for real, every ~0.5 ms of this loop.
                time.sleep(0)
            text = raw.strip()
            if not text:
                continue
            try:
                uid = text.decode("utf-8")
            except UnicodeDecodeError:
                raise _Reject(field, f"{label} line {lineno}: not valid UTF-8") from None
            if len(text) > api.MAX_USER_ID_BYTES:
                raise _Reject(field, f"{label} line {lineno}: UserID must be at most {api.MAX_USER_ID_BYTES} bytes")
            if uid in seen:
                skip.append(lineno)
            else:
                seen[uid] = None
                digest.update(text + b"\n")
    if not seen:
        raise _Reject(field, f"{label} has no UserIDs; an empty export never means all members")
    return FileRecipients(path, stat.st_size, stat.st_mtime_ns, frozenset(skip)), len(seen)


def parse_job(raw: bytes, file: str, line: int, base_dir: Path, batch_size: int, default_id: str) -> Job | Rejection:
    """Validate one JSONL line; `default_id` names it when it has no usable job_id."""
    job_id = default_id
    group_id: str | None = None
    try:
        try:
            doc = orjson.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Reject(None, "line is not valid UTF-8") from None
        except orjson.JSONDecodeError as exc:
            raise _Reject(None, f"line is not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict):
            raise _Reject(None, f"line must be a JSON object, not {_type_name(doc)}")
        if isinstance(doc.get("job_id"), str) and doc["job_id"]:
            job_id = doc["job_id"]
        if isinstance(doc.get("GroupId"), str):
            group_id = doc["GroupId"]
        unknown = [key for key in doc if key not in _KNOWN]
        if unknown:  # the first, in the line's order
            close = difflib.get_close_matches(unknown[0], KNOWN_KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise _Reject(unknown[0], f"unknown key{hint}; known keys: {', '.join(KNOWN_KEYS)}")
        _string(doc, "job_id")
        gid = _string(doc, "GroupId", required=True)
        assert gid is not None
        problem = api.group_id_problem(gid)
        if problem:
            raise _Reject("GroupId", problem)
        content = _string(doc, "Content", required=True)
        assert content is not None
        topic_id = _string(doc, "TopicId")
        group_type = _string(doc, "group_type")
        if group_type is not None and group_type not in api.GROUP_TYPES:
            raise _Reject("group_type", f"must be one of {', '.join(sorted(api.GROUP_TYPES))}")
        if "ToMembers_Account" in doc and "recipients_file" in doc:
            raise _Reject("recipients_file", "cannot be given together with ToMembers_Account")
        named = "ToMembers_Account" in doc or "recipients_file" in doc
        digest = _hasher(gid, content, topic_id, batch_size, not named)
        recipients: Recipients | None = None
        count = 0
        if "ToMembers_Account" in doc:
            inline = _inline(doc["ToMembers_Account"])
            for uid in inline:
                digest.update(uid.encode("utf-8") + b"\n")
            recipients, count = InlineRecipients(inline), len(inline)
        elif "recipients_file" in doc:
            name = _string(doc, "recipients_file")
            assert name is not None
            recipients, count = _from_file(base_dir / name, name, digest)
        if group_type is not None:
            if recipients is not None and not api.accepts_named_members(group_type):
                field = "ToMembers_Account" if "ToMembers_Account" in doc else "recipients_file"
                raise _Reject(field, f"a {group_type} group takes notifications to all members only")
            if topic_id is not None and not api.accepts_topics(group_type):
                raise _Reject("TopicId", f"applies to Community groups only, not {group_type}")
    except _Reject as rej:
        return Rejection(job_id, file, line, rej.field, rej.reason, group_id)
    return Job(
        job_id, file, line, gid, content, topic_id, group_type, recipients, count, batch_size, digest.hexdigest()
    )


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    stream: BinaryIO
    if path == STDIN:
        stream = sys.stdin.buffer
    else:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below, also on early exit
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        yield from enumerate(stream, 1)
    finally:
        if path != STDIN:
            stream.close()


def label_of(path: str) -> str:
    """How a jobs file is named in default job_ids: its file name, or `stdin`."""
    return "stdin" if path == STDIN else os.path.basename(path)


def read_jobs(paths: Iterable[str], batch_size: int) -> Iterator[Job | Rejection]:
    """Stream every job of every file in order; never holds more than one job's line in memory."""
    seen_ids: dict[str, str] = {}
    for path in paths:
        base_dir = Path.cwd() if path == STDIN else Path(path).parent
        label = label_of(path)
        for line, raw in _lines(path):
            if not raw.strip():
                continue
            item = parse_job(raw, path, line, base_dir, batch_size, f"{label}:{line}")
            first = seen_ids.get(item.job_id)
            if first is not None:
                item = Rejection(
                    item.job_id,
                    path,
                    line,
                    "job_id",
                    f"repeats the job_id of {first}",
                    item.group_id,
                )
            else:
                seen_ids[item.job_id] = f"{path}:{line}"
            yield item
