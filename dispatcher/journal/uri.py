"""Journal URIs: `postgresql://[user[:password]@]host[:port]/dbname?journal=NAME` (also `postgres://`).

`journal=NAME` names the run's journal in the database; every other query parameter goes to libpq
as written (`sslmode=require`, `connect_timeout=3`, ...), and so do PGPASSWORD, PGPASSFILE and
~/.pgpass, which libpq reads itself. The password is never shown: a journal URI is shown, logged and
recorded as `postgresql://user@host:port/dbname?journal=NAME`. The splitting and the shown form are
`dispatcher.uris`'; what a journal accepts is here.
"""

from __future__ import annotations

import dataclasses
import os
import re

from dispatcher import uris
from dispatcher.errors import UsageError

SCHEMES = ("postgresql", "postgres")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


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
    return uris.scheme_of(text) in SCHEMES


def refuse_other_scheme(text: str | os.PathLike[str] | None, option: str) -> None:
    """A URI of any other scheme (`postgresl://`, `pg://`, `redis://`) is a mistake, never a file path:
    refused in one line that keeps its user name and drops its password."""
    scheme = uris.scheme_of(text)
    if scheme is None or scheme in SCHEMES:
        return
    assert isinstance(text, str)
    shown = _rough(uris.split(text), scheme)
    raise UsageError(f"{option} {shown}: a journal is a file path or postgresql://host/dbname?journal=NAME")


def parse_journal_uri(text: str, option: str = "--out") -> JournalURI:
    """Check a journal URI; a bad one is a UsageError that never repeats its password."""
    uri = uris.split(text)
    if uri.spilled:
        shown = dataclasses.replace(uri, scheme="postgresql").shown(user="keep", keep=("journal",))
        raise UsageError(
            f"{option} {shown}: a user name or password with / ? or # in it must be percent-encoded (%2F %3F %23)"
        )
    rough = _rough(uri)
    try:
        host, port = uri.host()
    except ValueError as exc:
        raise UsageError(f"{option} {rough}: {exc}") from None
    query = uri.pairs()
    names = [value for key, value in query if key == "journal"]
    if len(names) != 1 or not _NAME.fullmatch(names[0]):
        raise UsageError(
            f"{option} {rough}: name the run's journal once, as ?journal=NAME (letters, digits, _ . : -; at most 100)"
        )
    name = names[0]
    conninfo = dataclasses.replace(uri, scheme="postgresql").written(uri.query_without("journal"))
    where = host or "localhost"
    if ":" in where:  # an IPv6 address keeps its brackets
        where = f"[{where}]"
    shown = dataclasses.replace(
        uri, scheme="postgresql", hosts=f"{where}:{port or 5432}", path=_dbname(uri), query=f"journal={name}"
    ).shown(user="keep", keep=("journal",))
    return JournalURI(conninfo=conninfo, name=name, shown=shown, password=uri.secret())


def _rough(uri: uris.URI, scheme: str = "postgresql") -> str:
    """A journal URI shown before it is known to be one: its user, host part and database."""
    return dataclasses.replace(uri, scheme=scheme, path=_dbname(uri)).shown(user="keep")


def _dbname(uri: uris.URI) -> str:
    return "/" + uri.path.lstrip("/")
