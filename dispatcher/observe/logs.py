"""Logging configuration in one place: structlog on stderr, console or JSON, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from dispatcher.observe import colour

_USERSIG_IN_URL = re.compile(r"(usersig=)[^&\s'\"]+", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with any UserSig in a URL, and every given secret, replaced by `[redacted]`."""
    text = _USERSIG_IN_URL.sub(r"\1[redacted]", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


class _Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(s for s in secrets if s)

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value, self.secrets)
        return event


class _StderrLogger:
    """Writes to whatever sys.stderr is now, so a progress display that wraps stderr keeps working."""

    def msg(self, message: str) -> None:
        stream: TextIO = sys.stderr
        try:
            stream.write(message + "\n")
            stream.flush()
        except OSError:  # stderr is a terminal that hung up, or a closed pipe: the run goes on
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _Dropper:
    """Drops the events named: what a person sees another way (the summary's table on a terminal)."""

    def __init__(self, events: Iterable[str]) -> None:
        self.events = frozenset(events)

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event.get("event") in self.events:
            raise structlog.DropEvent
        return event


def configure(fmt: str = "console", level: str = "info", secrets: Iterable[str] = (), drop: Iterable[str] = ()) -> None:
    """Configure structlog for this process. `fmt` is `console` (people) or `json` (machines); `level`
    the least level shown; `drop` events never shown."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colour.wanted(sys.stderr))
    structlog.configure(
        processors=[
            _Dropper(drop),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _Redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


def level_of(quiet: bool, verbose: bool) -> str:
    """The least level shown for --quiet and --verbose."""
    return "warning" if quiet else "debug" if verbose else "info"


def person_watching(fmt: str) -> bool:
    """A person reads both stdout and stderr on a terminal: the summary's table stands for its log line."""
    return fmt == "console" and sys.stdout.isatty() and sys.stderr.isatty()
