"""Every URI the dispatcher takes, split and shown in one place: a journal's (`postgresql://`), a rate
store's (`redis://`, `postgresql://`, ...) and a Pushgateway's (`http://`).

What each accepts stays with it (`dispatcher.journal.uri`, `dispatcher.pacing.store`,
`dispatcher.observe.metrics`): its schemes, its query parameters, its defaults. Here: the parts as
written, the user name and password decoded, the ports checked, and the one form that is ever shown,
which never holds the password. A password's / ? or # must be percent-encoded; a raw one ends the
host part early, so the host would be read from the password. Such a URI is `spilled`, and its
shown form keeps only what follows its last @.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from typing import Literal

REDACTED = "[redacted]"
PORT = "the port must be a number from 1 to 65535"
BRACKETS = "an IPv6 address goes between [ and ], as in [::1]"

_SCHEME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SCHEME = re.compile(rf"({_SCHEME_NAME.pattern})://")
_C0_OR_SPACE = "".join(map(chr, range(33)))


def scheme_of(text: object) -> str | None:
    """The scheme `text` starts with, before its `://`, lowercased; None for anything else (a path)."""
    found = _SCHEME.match(text) if isinstance(text, str) else None
    return found.group(1).lower() if found else None


@dataclasses.dataclass(frozen=True)
class URI:
    """A URI split as urllib splits it, but never refused here: a broken one is still shown (the
    caller refuses it, with its shown form). Every part is as written; `user` and `password` are
    decoded. Its repr() is its shown form: a part of a password can stand in any other part."""

    scheme: str  # lowercased
    userinfo: str  # before the host part's last @
    at: bool  # the host part had an @ (a user part, perhaps empty)
    hosts: str  # the host part after its @: "db:5432", "[::1]:6379", "h1:5432,h2:5433", ""
    path: str
    query: str
    fragment: str

    def __repr__(self) -> str:
        return f"URI({self.shown()!r})"

    @property
    def user(self) -> str | None:
        """The user name, decoded; None without a user part."""
        return urllib.parse.unquote(self.userinfo.partition(":")[0]) if self.at else None

    @property
    def password(self) -> str | None:
        """The password in the user part, decoded; None without one."""
        _, colon, password = self.userinfo.partition(":")
        return urllib.parse.unquote(password) if self.at and colon else None

    @property
    def spilled(self) -> bool:
        """An @ after the host part: a user name or password with a raw / ? or # ran on past it."""
        return "@" in self.path or "@" in self.query or "@" in self.fragment

    def pairs(self) -> list[tuple[str, str]]:
        """The query's parameters, decoded, in order, blank ones kept."""
        return urllib.parse.parse_qsl(self.query, keep_blank_values=True)

    def query_without(self, *names: str) -> str:
        """The query as written, less the parameters of these names (ours, not the client's): decoded
        and encoded again, a space (%20) would become '+', which libpq takes as it is."""
        pieces = self.query.split("&")
        return "&".join(p for p in pieces if p and urllib.parse.unquote_plus(p.partition("=")[0]) not in names)

    def secret(self) -> str:
        """The password a client would use: the user part's, else the last `password=` of the query
        (libpq and redis-py read both); "" without either."""
        given = [value for name, value in self.pairs() if name == "password"]
        return self.password or (given[-1] if given else "")

    def host(self) -> tuple[str, int | None]:
        """The one host, lowercased, and its port (None if not given); ValueError saying what is wrong."""
        return host_port(self.hosts)

    def written(self, query: str | None = None) -> str:
        """The URI a client is given, its password in it as written: `query` in place of its own, no
        fragment. Written out: urlunsplit drops the // of an empty host, which libpq then refuses (a
        socket in ?host=)."""
        query = self.query if query is None else query
        netloc = f"{self.userinfo}@{self.hosts}" if self.at else self.hosts
        return f"{self.scheme}://{netloc}{self.path}" + (f"?{query}" if query else "")

    def shown(self, *, user: Literal["drop", "keep", "mark"] = "drop", keep: tuple[str, ...] | None = ()) -> str:
        """The one form of this URI that is ever printed: never the password.

        `user`: "drop" leaves the user name out too (it can be half a secret); "keep" shows it
        (`user@`); "mark" shows where the credentials were (`user:[redacted]@`, or `[redacted]@`
        for a user part without a password, which may be a token). `keep`: the query parameters
        shown, as written (the others may hold a password, as libpq's `password=` does); None shows
        all of the rest as written, fragment included. A spilled URI shows only what follows its
        last @; if that @ stands in a query parameter's value, what follows may be the end of a
        password there, and nothing after the scheme is shown."""
        if self.spilled:
            tail = self._tail()
            if tail is None:
                return f"{self.scheme}://{REDACTED}"
            shown = split(f"{self.scheme}://{tail}").shown(keep=keep)
            return shown.replace("://", f"://{REDACTED}@", 1) if user == "mark" else shown
        credentials = ""
        if user == "keep" and self.userinfo.partition(":")[0]:
            credentials = f"{self.userinfo.partition(':')[0]}@"
        elif user == "mark" and self.at:
            name, colon, _ = self.userinfo.partition(":")
            credentials = f"{name}:{REDACTED}@" if colon else f"{REDACTED}@"
        if keep is None:
            rest = self.path + (f"?{self.query}" if self.query else "") + (f"#{self.fragment}" if self.fragment else "")
        else:
            kept = [item for item in self.query.split("&") if item.partition("=")[0] in keep and "=" in item]
            rest = self.path + (f"?{'&'.join(kept)}" if kept else "")
        return f"{self.scheme}://{credentials}{self.hosts}{rest}"

    def _tail(self) -> str | None:
        """What follows the last @ of a spilled URI; None when that @ is in a query parameter's value."""
        query = f"?{self.query}" if self.query else ""
        fragment = f"#{self.fragment}" if self.fragment else ""
        if "@" in self.fragment:
            return self.fragment.rpartition("@")[2]
        if "@" in self.query:
            before, _, after = self.query.rpartition("@")
            return None if "=" in before.rpartition("&")[2] else after + fragment
        return self.path.rpartition("@")[2] + query + fragment


def split(text: str) -> URI:
    """`text` in its parts, as urllib.parse.urlsplit splits it (leading blanks and any tab or newline
    dropped, the scheme lowercased), without refusing a broken host: `URI.host` does that."""
    text = text.lstrip(_C0_OR_SPACE).replace("\t", "").replace("\r", "").replace("\n", "")
    scheme, colon, rest = text.partition(":")
    if not (colon and _SCHEME_NAME.fullmatch(scheme)):
        scheme, rest = "", text
    netloc = ""
    if rest.startswith("//"):
        rest = rest[2:]
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        netloc, rest = rest[:end], rest[end:]
    rest, _, fragment = rest.partition("#")
    path, _, query = rest.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    return URI(scheme.lower(), userinfo, bool(at), hosts, path, query, fragment)


def shown_endpoint(url: str) -> str:
    """An API endpoint as it is ever shown: a gateway's basic-auth password in it (aiohttp sends the
    URL's user part) replaced, as every secret is; the rest as written."""
    return split(url).shown(user="mark", keep=None) if "@" in url else url


def host_port(host: str) -> tuple[str, int | None]:
    """One host as a URI writes it (`db`, `db:5432`, `[::1]:5432`), lowercased, and its port (None if
    not given); ValueError saying what is wrong: a port that is not 1 to 65535, brackets that do not
    hold an IP address."""
    if "[" in host or "]" in host:
        before, _, bracketed = host.partition("[")
        name, close, after = bracketed.partition("]")
        if before or not close or (after and not after.startswith(":")) or not _is_ip(name):
            raise ValueError(BRACKETS)
        port = after[1:]
    else:
        name, _, port = host.partition(":")
    if not port:
        return name.lower(), None
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(PORT)
    return name.lower(), int(port)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
