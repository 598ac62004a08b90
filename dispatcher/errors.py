"""The exception hierarchy: one base class, and one subclass per way a run can refuse to go on.

Each carries the process exit status the CLI maps it to, so the CLI needs no table of its own.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator


class DispatcherError(Exception):
    """Base class of every error the dispatcher raises on purpose.

    Its message is worded as the command line words it, naming flags (`pass --resume`). One that names a
    flag also carries `library`, the same message naming what a library caller sets instead
    (`set RunConfig(resume=True)`). The library's entry points raise that wording (`library_words`),
    with the command line's kept in `cli`, which is what the command line prints."""

    exit_code = 2
    library: str | None = None  # the message in the library's words, where it names a flag
    cli: str | None = None  # the message in the command line's words, once raised in the library's

    def __init__(self, *args: object, library: str | None = None) -> None:
        super().__init__(*args)
        if library is not None:
            self.library = library

    @property
    def for_cli(self) -> str:
        """The message as the command line says it."""
        return str(self) if self.cli is None else self.cli


class UsageError(DispatcherError):
    """The command line or the library call is inconsistent (exit 2)."""


class ConfigError(DispatcherError):
    """Credentials, region or endpoint are missing or wrong (exit 2)."""


class InputError(DispatcherError):
    """A jobs file or outcome journal cannot be read at all (exit 2).

    A single bad job is not an InputError: it is rejected and the run goes on.
    """


class JournalError(InputError):
    """The outcome journal is unusable: refused without --resume, or corrupt before its last line."""


class JournalLockedError(JournalError):
    """Another run holds the journal; two writers would both send what neither has finished."""


class OutputError(DispatcherError):
    """A file the run writes (journal, summary) cannot be written: disk full, I/O error (exit 2)."""


class JournalWriteError(OutputError):
    """A journal line or its fsync failed; the run stops taking work and can be resumed."""


class SignatureError(DispatcherError):
    """A UserSig failed verification; `code` is the API ErrorCode the server answers with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RateStoreError(DispatcherError):
    """The shared rate store cannot be reached, was lost mid-run, or holds the budget at another
    rate (exit 2). A run never falls back to a private budget: that would overrun the app's cap."""


@contextlib.contextmanager
def library_words() -> Iterator[None]:
    """Around a library entry point (RunConfig, Runner, work): an error raised inside that names a flag
    is raised in the library's words instead, with the command line's kept in `cli`."""
    try:
        yield
    except DispatcherError as exc:
        if exc.library is None:
            raise
        worded = copy.copy(exc)  # the same class, so `except JournalLockedError` still catches it
        worded.args = (exc.library,)
        worded.library, worded.cli = None, str(exc)
        raise worded.with_traceback(exc.__traceback__) from None


QUOTED_CHARS = 64  # of a value quoted back in a message; a longer one is cut, and its size said
PATH_CHARS = 4096  # PATH_MAX: a file name any longer cannot be opened, so it is never needed whole


def quoted(value: object, *, bare: bool = False, limit: int = QUOTED_CHARS) -> str:
    """A value from the user's input as a message quotes it back: its repr (or the text itself, `bare`),
    whole when short. A longer string is cut to its first `limit` characters, with "…" and its size
    in bytes: a 1 MB UserID would otherwise be echoed whole into the journal and the log."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value if bare else repr(value)
        head = value[:limit] if bare else repr(value[:limit])
        return f"{head}… ({len(value.encode('utf-8', 'surrogatepass')):,} bytes)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def said(exc: BaseException, *, limit: int = 200) -> str:
    """An exception's own words (a library's, which may quote a line of the user's file): its first line,
    cut as any value of the user's, or its type's name if it has none."""
    text = str(exc).strip()
    return quoted(text.splitlines()[0], bare=True, limit=limit) if text else type(exc).__name__
