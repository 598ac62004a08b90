"""Exports in object storage: a `recipients_file` or `exclude_file` that is an `s3://` or `gs://` URI (a glob
over keys included). Its objects are listed, sorted by key, and each is downloaded once, a block at a time, to
a temporary file of its own that its format reads as it reads a local file; the next object downloads while
one is read. Each object's key, size and ETag (S3) or generation (GCS) go into the job hash (`exports`).

The library is fsspec's: s3fs for S3, gcsfs for GCS, each an extra of its own (`s3`, `gcs`). pyarrow's own
`S3FileSystem` and `GcsFileSystem` were the other candidates, pyarrow being the exports extra already; but
they honour neither `AWS_ENDPOINT_URL` nor `STORAGE_EMULATOR_HOST` (the standard ways to name an
S3-compatible store or an emulator), and their listings carry no ETag or generation, which the job hash
needs. s3fs takes its credentials from botocore's own chain (the environment, a profile, an instance role)
and gcsfs from Application Default Credentials: the standard ways, and no flag of ours.

Anything that keeps an object from being listed or read whole (a bucket or an object that does not exist, a
glob that matches nothing, credentials refused, a connection lost mid-read after the library's retries) is
`Unavailable`: one line naming the URI, nothing of the job sent, exit 2, the other jobs go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from dispatcher import uris
from dispatcher.errors import PATH_CHARS, quoted, said
from dispatcher.jobs.files import Side, Source, Stopped, Stored
from dispatcher.jobs.inputs import ExportError, spill_message
from dispatcher.tim.apis.base import Reject

_BLOCK = 8 << 20  # bytes asked of the store at a time: one request each, at most two held at once
_AHEAD = 2  # objects downloaded ahead of the one being read (each on disk until it has been read)


class Unavailable(Reject):
    """The store would not list or hand over an object whole: the job is rejected and the run exits 2."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One kind of object store: its URI prefix, the fsspec package that reads it and the extra that brings it."""

    prefix: str
    package: str
    extra: str
    version: str  # the listing's field that changes whenever the object does


SCHEMES = (Scheme("s3://", "s3fs", "s3", "ETag"), Scheme("gs://", "gcsfs", "gcs", "generation"))


def scheme_of(name: str) -> Scheme | None:
    """The store a `recipients_file` names, or None for a local path."""
    return next((scheme for scheme in SCHEMES if name.startswith(scheme.prefix)), None)


def _label(uri: str) -> str:
    return quoted(uri, bare=True, limit=PATH_CHARS)


def filesystem(scheme: Scheme, uri: str) -> Any:
    """The fsspec filesystem of the scheme for the environment as it is now (credentials and endpoints are
    the library's to find there), or ExportError naming the extra."""
    settings = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "STORAGE_"))))
    try:
        return _filesystem(scheme.package, settings)
    except ImportError:
        raise ExportError(
            f"{_label(uri)}: a {scheme.prefix} export needs {scheme.package}, the {scheme.extra} extra: "
            f"pip install 'tim-dispatcher[{scheme.extra}]'"
        ) from None


@functools.lru_cache(maxsize=4)
def _filesystem(package: str, _settings: tuple[tuple[str, str], ...]) -> Any:
    """One filesystem for each environment: making one (a botocore session) costs a third of a second, and a
    run lists and downloads with the same. The environment is part of the key, so a changed one is seen."""
    if package == "s3fs":
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True)
    # gcsfs's plain filesystem: the package's default adds an experimental probe of each bucket's layout
    # that warns on every call against an emulator.
    from gcsfs.core import GCSFileSystem

    logging.getLogger("gcsfs").setLevel(logging.ERROR)
    return GCSFileSystem(skip_instance_cache=True)


def objects(side: Side, scheme: Scheme) -> list[tuple[str, Stored]]:
    """The objects of one side of an export, sorted by key: each one's URI and identity; raises Unavailable."""
    path = side.name[len(scheme.prefix) :]
    bucket, _, key = path.partition("/")
    if "@" in path and ("@" in bucket or ":" in bucket):  # no bucket name holds either: `user:secret@bucket`
        raise Unavailable(
            side.field,
            f"{uris.split(side.name).shown(keep=None)}: credentials in the URI are not read: give them to the "
            "store's library (the environment, a profile, an instance role or Application Default Credentials)",
        )
    fs = filesystem(scheme, side.name)
    if not bucket or not key:
        raise Reject(side.field, f"{side.label}: names no object; give {scheme.prefix}bucket/key")
    try:
        if glob.has_magic(key):
            found = fs.glob(path, detail=True)
            entries = sorted((info for info in found.values() if info.get("type") == "file"), key=_key)
            if not entries:
                raise Unavailable(
                    side.field, f"{side.label} matches no object; a glob that matches nothing never means all members"
                )
        else:
            entries = [fs.info(path)]
            if entries[0].get("type") != "file":
                raise Unavailable(side.field, f"{side.label}: no such object (a prefix is not an export)")
    except Reject:
        raise
    except Exception as exc:  # the library's, after its own retries
        raise Unavailable(side.field, f"{side.label}: {_reason(exc)}") from None
    found_objects = []
    for info in entries:
        version = info.get(scheme.version)
        stored = Stored(scheme.prefix, int(info.get("size") or 0), "" if version is None else str(version))
        found_objects.append((scheme.prefix + _key(info), stored))
    return found_objects


def write_object(uri: str, what: str, fill: Callable[[BinaryIO], None]) -> None:
    """Write `what` to the object `uri` whole: `fill` writes it to a stream the store's library uploads (in
    parts, for a big one), and the object appears only once the stream is complete; on any failure nothing
    is committed and the object is as it was. Raises ExportError (one line naming the URI, no secret)."""
    scheme = scheme_of(uri)
    assert scheme is not None
    path = uri[len(scheme.prefix) :]
    bucket, _, key = path.partition("/")
    shown = uris.split(uri).shown(keep=None)
    if "@" in path and ("@" in bucket or ":" in bucket):
        raise ExportError(
            f"{shown}: credentials in the URI are not read: give them to the store's library (the environment, a "
            "profile, an instance role or Application Default Credentials)"
        )
    if not bucket or not key or key.endswith("/"):
        raise ExportError(f"{shown}: names no object; give {scheme.prefix}bucket/key")
    fs = filesystem(scheme, uri)
    try:
        stream = fs.open(path, "wb")
    except Exception as exc:
        raise ExportError(f"{shown}: cannot write {what}: {_reason(exc, 'write')}") from None
    try:
        fill(stream)
    except BaseException:
        stream.discard()  # an upload begun is abandoned: no object, or the one before, stays
        raise
    try:
        stream.close()  # the upload completes: the object appears whole
    except Exception as exc:
        raise ExportError(f"{shown}: cannot write {what}: {_reason(exc, 'write')}") from None


def _key(info: dict[str, Any]) -> str:
    return str(info["name"])


def _reason(exc: BaseException, doing: str = "read") -> str:
    """What the store said, in one line with no secret (no library puts a key in its messages; a URI we
    build holds none)."""
    if isinstance(exc, FileNotFoundError):
        return "no such bucket or object"
    if isinstance(exc, PermissionError):
        return f"access refused ({said(exc)}): check the credentials"
    return f"cannot {doing}: {said(exc)}"


@contextlib.contextmanager
def local_copies(sources: Sequence[Source], field: str, stop: threading.Event | None) -> Iterator[Iterator[Source]]:
    """The sources in order, each stored one replaced by a local copy downloaded once (`_AHEAD` of them at a
    time, while the one before is read), removed once its reader asks for the next."""
    if not any(source.stored is not None for source in sources):
        yield iter(sources)
        return
    pool = ThreadPoolExecutor(max_workers=_AHEAD, thread_name_prefix="dispatcher-download")
    cancel = threading.Event()
    futures: list[Future[str] | None] = []
    try:

        def copies() -> Iterator[Source]:
            for index, source in enumerate(sources):
                while len(futures) < min(len(sources), index + 1 + _AHEAD):
                    ahead = sources[len(futures)]
                    futures.append(None if ahead.stored is None else pool.submit(_download, ahead, field, stop, cancel))
                future = futures[index]
                if future is None:
                    yield source
                    continue
                local = future.result()
                try:
                    yield dataclasses.replace(source, path=Path(local))
                finally:
                    _remove(local)

        yield copies()
    finally:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures:
            if future is not None and future.done() and future.exception() is None:
                _remove(future.result())


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _download(source: Source, field: str, stop: threading.Event | None, cancel: threading.Event) -> str:
    """The object copied whole to a temporary file of its own (its name ends as the object's does, so that a
    workbook is still told by its name); the file's path. Raises Unavailable, ExportError, Stopped."""
    assert source.stored is not None
    scheme = scheme_of(source.name)
    assert scheme is not None
    fs = filesystem(scheme, source.name)
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - removed by local_copies
            prefix="dispatcher-export-", suffix=f"-{source.path.name}", delete=False
        )
    except OSError as exc:
        raise ExportError(spill_message(source.label, exc)) from None
    done = 0
    try:
        with handle:
            try:
                remote = fs.open(source.name[len(scheme.prefix) :], "rb", block_size=_BLOCK, cache_type="none")
            except Exception as exc:
                raise Unavailable(field, f"{source.label}: {_reason(exc)}") from None
            with remote:
                # The version read must be the one listed (and hashed): an object rewritten in between is
                # refused rather than sent under another's identity. s3fs checks each block against it after.
                now = (getattr(remote, "details", None) or {}).get(scheme.version)
                if now is not None and str(now) != source.stored.version:
                    raise Unavailable(field, f"{source.label}: changed since it was listed; run again")
                while True:
                    if cancel.is_set() or (stop is not None and stop.is_set()):
                        raise Stopped
                    try:
                        chunk = remote.read(_BLOCK)
                    except Exception as exc:
                        raise Unavailable(field, f"{source.label}: {_reason(exc)}") from None
                    if not chunk:
                        break
                    try:
                        handle.write(chunk)
                    except OSError as exc:
                        raise ExportError(spill_message(source.label, exc)) from None
                    done += len(chunk)
        if done != source.stored.size:  # cut short, or changed since it was listed
            raise Unavailable(
                field, f"{source.label}: cannot read: {done:,} bytes of {source.stored.size:,} arrived; try again"
            )
        return handle.name
    except BaseException:
        _remove(handle.name)
        raise
