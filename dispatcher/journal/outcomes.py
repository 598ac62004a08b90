"""The outcome journal: one JSONL line per HTTP request and per rejected job, append-only.

Writing: each line goes to the file in a single write(2) on an O_APPEND descriptor as soon as it
is known, so a crash leaves whole lines only; fsync runs on a short cadence and at close. The
writer holds an exclusive flock(2) on the journal for its whole life: two runs appending to one
journal would both send the batches neither has finished. The kernel drops the lock with the
process, so a `kill -9` leaves nothing to clean up.
A write or fsync that fails (disk full, I/O error) is not retried and nothing more is written:
whatever part of a line reached the disk is then the journal's torn last line, which a resume cuts
off. The caller learns of it from `JournalWriteError` and stops the run. A journal deleted while
the run writes it (a clean-up job's `rm`) is put back at its path from the file the run still has
open (`Journal.keep_path`, every round of the periodic fsync and at the end), copied in a thread.
Reading: `load_state` gives each batch's fate for a resume, cutting off a torn last line first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import functools
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import structlog

from dispatcher.core.state import JournalState
from dispatcher.core.status import STATUSES
from dispatcher.errors import JournalError, JournalLockedError, JournalWriteError, quoted
from dispatcher.threads import in_daemon_thread

log = structlog.get_logger("dispatcher")


@dataclasses.dataclass(frozen=True)
class Moved:
    """The journal's path no longer named the file the run writes, and what was done (Journal.keep_path)."""

    message: str
    stop: bool  # its lines are in another file than the path: the run must stop, to be put back by hand


class Journal:
    """Append-only writer that owns the journal file. Not thread-safe; one event loop writes.

    Opening takes the lock (or raises JournalLockedError naming the pid that holds it) and creates
    the file if need be; `size_at_open` tells the caller whether it held lines already.
    """

    def __init__(self, path: str | os.PathLike[str], fsync_interval: float = 0.5) -> None:
        self.path = Path(path)
        _check_regular(self.path)
        # O_NONBLOCK: a FIFO with no reader fails at once (ENXIO) instead of hanging in open(2)
        # where no signal can reach us; it is cleared again so that writes block as usual.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
        try:
            try:
                fd = os.open(self.path, flags | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                fd = os.open(self.path, flags, 0o644)
                created = False
            os.set_blocking(fd, True)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open for writing: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = lock_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise JournalError(f"{self.path}: cannot lock: {exc.strerror}") from None
            who = f"pid {holder}" if holder else "another process"
            raise JournalLockedError(
                f"{self.path} is in use by another run ({who}); one run owns a journal until it ends: "
                "wait for it, or stop it, then --resume",
                library=f"{self.path} is in use by another run ({who}); one run owns a journal until it ends: "
                "wait for it, or stop it, then set RunConfig(resume=True)",
            ) from None
        self._fd = fd
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)  # to tell the journal under any other name
        self.size_at_open = st.st_size
        # This open made the file: a run that then writes no line into it may remove it again
        # (`remove_if_unused`). open_journal clears it for --resume, which names a file to keep.
        self.discardable = created
        self.lines = 0  # lines written through this writer
        self.removed = False  # removed by remove_if_unused
        self.state = JournalState()  # what the journal held, for a resume (see open_journal)
        self._fsync_interval = fsync_interval
        self._dirty = False
        self.error: JournalWriteError | None = None  # the first write or fsync that failed

    def _fail(self, exc: OSError) -> JournalWriteError:
        if self.error is None:
            self.error = JournalWriteError(f"{self.path}: cannot write: {exc.strerror}")
        return self.error

    def write(self, doc: dict[str, Any]) -> None:
        """Append one line; raise JournalWriteError if it could not be written (then and from then on)."""
        if self.error is not None:
            raise self.error
        data = orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
        try:
            while data:  # a regular file takes it in one go; the loop covers a short write
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            raise self._fail(exc) from None
        self._dirty = True
        self.lines += 1

    def remove_if_unused(self) -> None:
        """Remove the journal if this run made it and wrote nothing into it: a run refused or
        interrupted before sending leaves no empty file behind (the next run would find an `--out`
        it never asked for). Only while the lock is held, and only if the path still names this
        file and it is empty: another run's journal, or one that existed before, is never removed."""
        if self._fd < 0 or not self.discardable or self.lines:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self.identity and st.st_size == 0:
                os.unlink(self.path)
                self.removed = True  # on purpose: not a deletion for keep_path to undo

    def sync(self) -> None:
        if self._dirty and self.error is None:
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise self._fail(exc) from None

    async def sync_periodically(
        self, on_error: Callable[[JournalWriteError], None], on_moved: Callable[[Moved], None]
    ) -> None:
        """Run as a task: fsync in a thread every `fsync_interval` while lines arrive, and check every
        round that the path still names the journal (`keep_path`).

        Only fsync's own error fails the journal. A thread that could not be started (say, every
        file descriptor is taken by connections) is not a write error: the lines are written, and
        the next round, or close(), syncs them.
        """
        while self.error is None:
            await asyncio.sleep(self._fsync_interval)
            if self._dirty:
                self._dirty = False
                try:
                    # The thread syncs a descriptor of its own: should this task be cancelled while it
                    # runs, the journal's may be closed, and its number reused, before the thread gets to it.
                    fd = os.dup(self._fd)
                except OSError:
                    self._dirty = True  # no descriptor to spare: the next round, or close(), syncs
                    continue
                try:
                    failure = await in_daemon_thread(functools.partial(_fsync_closing, fd), name="dispatcher-fsync")
                except Exception:  # the thread could not be started: it never had the descriptor
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    self._dirty = True
                    continue
                except BaseException:  # cancelled mid-sync: what it was syncing is close()'s to sync
                    self._dirty = True
                    raise
                if failure is not None:
                    on_error(self._fail(failure))
            # After the fsync, never during it: keep_path may replace the descriptor that it syncs.
            try:
                moved = await self.keep_path()
            except JournalWriteError as exc:
                on_error(exc)
                continue
            if moved is not None:
                on_moved(moved)

    async def keep_path(self) -> Moved | None:
        """Make sure the journal's path still names the file this run writes; None if it does.

        A journal deleted during the run (a clean-up job's `rm`) or moved away would leave its lines
        in a file without a name, lost at exit, and a resume would send everything again. Its lines
        are copied into a new file at the path, locked before it gets the name, and writing goes on
        there. A path that names another file now (the next run's journal, once the name was free)
        is never overwritten: the lines go to a file beside it, writing goes on there, and the run
        must stop. The copy runs in a thread, so that a long journal does not hold the event loop
        (and every request of the run) while it runs; see `_move_to`.
        Raises JournalWriteError if the lines cannot be put anywhere.
        """
        if self._fd < 0 or self.removed:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError:
            return None  # the directory cannot be searched just now: nothing to tell
        if st is not None and (st.st_dev, st.st_ino) == self.identity:
            return None
        saved = self.path.with_name(f"{self.path.name}.{os.getpid()}.saved")
        taken = self.path
        if st is None:
            what = "deleted during the run (or moved away)"
            if await self._move_to(self.path, what, otherwise=saved):
                return Moved(
                    f"{self.path} was deleted during the run (or moved away); restored it from the file the run "
                    "still has open, with every line written so far, and the run goes on",
                    stop=False,
                )
        else:
            await self._move_to(saved, "replaced by another file")
        return Moved(
            f"{taken} is another file since the run began (the journal was deleted or moved and the name taken "
            f"again); it was left alone, and this run's lines are saved in {saved}: put them back before a --resume",
            stop=True,
        )

    async def _move_to(self, target: Path, what: str, otherwise: Path | None = None) -> bool:
        """Copy every line into a new, locked file named `target` (or `otherwise`, should another file
        take that name during the copy), and write there from now on. True if it is `target`.

        The bulk of the copy runs in a thread while the loop goes on writing lines to the old file;
        the loop then copies those few lines too and switches files in one step, with no await in
        between, so no line is written meanwhile."""
        # Read back through /proc (Linux): the descriptor we write is write-only, and a file that has
        # lost its last name cannot be linked to a new one, only copied. Its own offset tells where
        # the thread's copy ended.
        try:
            mode = stat.S_IMODE(os.fstat(self._fd).st_mode)
            old = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY)
        except OSError as exc:
            raise self._unsaved(what, target, exc) from None
        copy = functools.partial(_copy_into_new, old, target, mode)
        copying = asyncio.ensure_future(in_daemon_thread(copy, name="dispatcher-journal"))
        try:
            try:
                new, temporary = await asyncio.shield(copying)
            except (OSError, asyncio.CancelledError):
                raise
            except Exception:  # no thread could be started: copy here, holding the loop, rather than lose lines
                new, temporary = copy()
        except OSError as exc:
            os.close(old)
            raise self._unsaved(what, target, exc) from None
        except BaseException:  # cancelled: the thread still reads `old`; what it made is discarded once it ends
            copying.add_done_callback(functools.partial(_discard_copy, old))
            raise
        name = target
        try:
            try:
                while chunk := os.read(old, 1 << 20):  # the lines written while the thread copied
                    while chunk:
                        chunk = chunk[os.write(new, chunk) :]
            finally:
                os.close(old)
            fcntl.fcntl(new, fcntl.F_SETFL, fcntl.fcntl(new, fcntl.F_GETFL) | os.O_APPEND)
            try:
                os.link(temporary, name)  # unlike a rename, never replaces a file that took the name meanwhile
            except FileExistsError:
                if otherwise is None:
                    raise
                name = otherwise
                os.link(temporary, name)
            os.unlink(temporary)
        except OSError as exc:
            _discard(new, temporary)
            raise self._unsaved(what, name, exc) from None
        os.close(self._fd)
        self._fd = new
        self._dirty = True  # the lines copied last are not synced yet
        st = os.fstat(new)
        self.identity = (st.st_dev, st.st_ino)
        self.path = name
        return name == target

    def _unsaved(self, what: str, target: Path, exc: OSError) -> JournalWriteError:
        return JournalWriteError(
            f"{self.path} was {what} and its lines cannot be saved ({target}: {exc.strerror}); they are only "
            "in the file this run has open, until it exits"
        )

    def close(self) -> None:
        """Sync and close (which releases the lock); raise JournalWriteError if the last sync failed."""
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1


def _fsync_closing(fd: int) -> OSError | None:
    """fsync `fd` and close it (a duplicate of the journal's); the error, if the sync failed."""
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
    return None


def _copy_into_new(old: int, target: Path, mode: int) -> tuple[int, str]:
    """Copy what `old` holds into a new, locked, synced temporary file beside `target` (in a thread):
    its descriptor and name. On an error nothing of it is left."""
    new, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restoring", dir=target.parent)
    try:
        fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        os.fchmod(new, mode)
        while chunk := os.read(old, 1 << 20):
            while chunk:
                chunk = chunk[os.write(new, chunk) :]
        os.fsync(new)
    except BaseException:
        _discard(new, temporary)
        raise
    return new, temporary


def _discard(new: int, temporary: str) -> None:
    with contextlib.suppress(OSError):
        os.close(new)
    with contextlib.suppress(OSError):
        os.unlink(temporary)


def _discard_copy(old: int, copying: asyncio.Future[tuple[int, str]]) -> None:
    """A copy that nobody awaits any more (`Journal._move_to` was cancelled) has ended: drop it."""
    os.close(old)
    if not copying.cancelled() and copying.exception() is None:
        _discard(*copying.result())


def _check_regular(path: Path) -> None:
    """A journal is a regular file: it is read back to resume. /dev/null, a FIFO or the terminal would
    take the lines and give none back, and the next run would send everything again."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"{path}: cannot open for writing: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise JournalError(
            f"{path} is {kind}; the outcome journal must be a file, to be read back on --resume",
            library=f"{path} is {kind}; the outcome journal must be a file, to be read back on a resume "
            "(RunConfig(resume=True))",
        )


def held_by(path: str | os.PathLike[str]) -> int | None:
    """The pid of the run that holds the journal at `path` (0 if unknown), or None if none does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return lock_holder(fd) or 0
    finally:
        os.close(fd)
    return None


def open_journal(path: str | os.PathLike[str], *, resume: bool) -> Journal:
    """Open a run's journal: take the lock first (a journal in use is refused before it is read),
    refuse one that holds lines unless resuming, and read its state for the resume."""
    journal = Journal(path)
    if resume:  # a journal asked for by name to be continued is kept, even one this run made
        journal.discardable = False
        if journal.size_at_open == 0:  # a cron job's first run, or a run kept elsewhere: say which it is
            log.warning(f"--resume: {journal.path} holds no run to resume; this send starts a new one")
    if journal.size_at_open > 0:
        try:
            if not resume:
                raise JournalError(
                    f"{journal.path} exists and is not empty; pass --resume to continue it, or choose another --out",
                    library=f"{journal.path} exists and is not empty; set RunConfig(resume=True) to continue it, "
                    "or choose another RunConfig.out",
                )
            journal.state = load_state(path)
        except BaseException:
            journal.close()
            raise
    return journal


def lock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open as `fd`, from /proc/locks (Linux); None if unknown."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as handle:
            for line in handle:
                # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146840 0 EOF"; waiters carry "->" and are skipped.
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def iter_records(path: str | os.PathLike[str], *, repair: bool = False) -> Iterator[dict[str, Any]]:
    """Every whole line of a journal, in order; blank lines are skipped. A torn last line (JSON cut
    short) is skipped, and cut off if `repair`.

    A bad line anywhere else, and whole JSON that is not an outcome line anywhere, is not a crash
    artefact but damage, and raises JournalError.
    """
    path = Path(path)
    try:
        handle = path.open("r+b" if repair else "rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        offset = 0
        for lineno, raw in enumerate(handle, 1):
            torn = not raw.endswith(b"\n")
            if raw.isspace():  # a blank line, as an editor leaves one: skipped, as in jobs files
                offset += len(raw)
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                if torn:  # a write cut short by power loss: drop it
                    if repair:
                        _repair(handle, path, functools.partial(handle.truncate, offset))
                    return
                doc = None
            # Whole JSON that is not an outcome line is damage wherever it is, the last line too: a
            # newer version's line or a hand edit, never a torn write, so it is neither taken nor cut off.
            problem = "not JSON" if doc is None else _record_problem(doc)
            if problem is not None:
                if lineno == 1 and _is_job(doc):  # the mistake is the file given, not damage
                    raise JournalError(
                        f"{path} is a jobs file, not an outcome journal: give the journal its send wrote "
                        f"(by default {path.with_suffix('').name}.outcomes.jsonl beside it)"
                    ) from None
                detail = "" if doc is None else f" ({problem})"
                raise JournalError(f"{path}:{lineno}: not an outcome line; the journal is damaged{detail}") from None
            if torn and repair:  # whole, but its newline was lost: restore it before appending
                handle.seek(0, os.SEEK_END)
                _repair(handle, path, lambda: handle.write(b"\n"))
            offset += len(raw)
            yield doc


# Keys only a job has: a line with one of them and no outcome status is a job.
_JOB_KEYS = frozenset({"GroupId", "Content", "ToMembers_Account", "To_Account", "Text", "recipients_file", "api"})


def _is_job(doc: object) -> bool:
    return isinstance(doc, dict) and "status" not in doc and not _JOB_KEYS.isdisjoint(doc)


def _record_problem(doc: object) -> str | None:
    """Why `doc` is not an outcome line, as far as reading a journal relies on its shape, or None.

    A status this version does not know (a newer version's, a hand edit) or a batch outside its job's
    batches cannot be given a fate: taken, the report would drop the batch and a resume send it again.
    """
    if not isinstance(doc, dict):
        return "not an object"
    if not isinstance(doc.get("job_id"), str):
        return "no job_id"
    for key in ("batch", "batches", "attempt"):
        value = doc.get(key)
        if value is not None and (type(value) is not int or value < 0):
            return f"{key} {quoted(value)}"
    status = doc.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        return f"unknown status {quoted(status)}; known: {', '.join(sorted(STATUSES))}"
    batch, batches = doc.get("batch"), doc.get("batches")
    if batch is not None and batches is not None and batch >= batches:
        return f"batch {batch} of {batches}, which are numbered from 0"
    return None


def _repair(handle: Any, path: Path, fix: Callable[[], object]) -> None:
    try:
        fix()
        handle.flush()
    except OSError as exc:
        raise JournalError(f"{path}: cannot repair its torn last line: {exc.strerror}") from None


def load_state(path: str | os.PathLike[str], *, repair: bool = True) -> JournalState:
    """Read a journal for a resume, cutting off a torn last line (unless `repair` is False: a dry run
    only reads, and the journal may belong to a run in progress)."""
    state = JournalState()
    for doc in iter_records(path, repair=repair):
        state.add(doc)
    return state


def is_nonempty(path: str | os.PathLike[str]) -> bool:
    try:
        return Path(path).stat().st_size > 0
    except FileNotFoundError:
        return False
