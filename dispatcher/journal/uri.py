"""Journal URIs: `postgresql://[user[:password]@]host[:port]/dbname?journal=NAME` (also `postgres://`).

`journal=NAME` names the run's journal in the database; every other query parameter goes to libpq
as written (`sslmode=require`, `connect_timeout=3`, ...), and so do PGPASSWORD, PGPASSFILE and
~/.pgpass, which libpq reads itself. The password is never shown: a journal URI is shown, logged and
recorded as `postgresql://user@host:port/dbname?journal=NAME`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse

from dispatcher.errors import UsageError

SCHEMES = ("postgresql", "postgres")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclasses.dataclass(frozen=True)
class JournalURI:
    """A journal kept in PostgreSQL. `conninfo` is what libpq is given (the password in it, if the URI
    had one; without `journal=`); `shown` is the one form that is ever printed."""

    conninfo: str = dataclasses.field(repr=False)
    name: str
    shown: str
    password: str = dataclasses.field(default="", repr=False)

    def __str__(self) -> str:
        return self.shown


def is_journal_uri(text: str | os.PathLike[str] | None) -> bool:
    """True for a string that names a PostgreSQL journal (a path is never a scheme and //)."""
    return isinstance(text, str) and "://" in text and text.partition("://")[0].lower() in SCHEMES


def refuse_other_scheme(text: str | os.PathLike[str] | None, option: str) -> None:
    """A URI of any other scheme (`postgresl://`, `pg://`, `redis://`) is a mistake, never a file path:
    refused in one line that keeps its user name and drops its password."""
    if not isinstance(text, str):
        return
    found = _SCHEME.match(text)
    if found is None or found.group(1).lower() in SCHEMES:
        return
    netloc, _, rest = text[found.end() :].partition("/")
    user, at, host = netloc.rpartition("@")
    shown = f"{found.group(1)}://{user.partition(':')[0] + at}{host}/{rest.split('?')[0]}"
    raise UsageError(f"{option} {shown}: a journal is a file path or postgresql://host/dbname?journal=NAME")


def parse_journal_uri(text: str, option: str = "--out") -> JournalURI:
    """Check a journal URI; a bad one is a UsageError that never repeats its user name or password."""
    parts = urllib.parse.urlsplit(text)
    if "@" in parts.path or "@" in parts.fragment or "@" in parts.query:
        raise UsageError(
            f"{option} postgresql://{text.rpartition('@')[2]}: a user name or password with / ? or # in it "
            "must be percent-encoded (%2F %3F %23)"
        )
    host = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username or "") if "@" in parts.netloc else ""
    dbname = urllib.parse.unquote(parts.path.lstrip("/"))
    rough = f"postgresql://{user + '@' if user else ''}{host}/{dbname}"
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{option} {rough}: the port must be a number from 1 to 65535") from None
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    names = [value for key, value in query if key == "journal"]
    if len(names) != 1 or not _NAME.fullmatch(names[0]):
        raise UsageError(
            f"{option} {rough}: name the run's journal once, as ?journal=NAME (letters, digits, _ . : -; at most 100)"
        )
    name = names[0]
    # The other parameters as written: decoded and encoded again, a space (%20) became '+', which
    # libpq takes as it is.
    pieces = parts.query.split("&")
    rest = "&".join(p for p in pieces if p and urllib.parse.unquote_plus(p.partition("=")[0]) != "journal")
    # written out: urlunsplit drops the // of an empty host, which libpq then refuses (a socket in ?host=)
    conninfo = f"postgresql://{parts.netloc}{parts.path}{'?' + rest if rest else ''}"
    where = parts.hostname or "localhost"
    if ":" in where:  # an IPv6 address keeps its brackets
        where = f"[{where}]"
    shown = f"postgresql://{user + '@' if user else ''}{where}:{port or 5432}/{dbname}?journal={name}"
    password = urllib.parse.unquote(parts.password or "") if "@" in parts.netloc else ""
    return JournalURI(conninfo=conninfo, name=name, shown=shown, password=password)
