"""The three kinds of URI the dispatcher takes (a journal's, a rate store's, a Pushgateway's), each given a
password: its shown form, and every refusal, never hold any part of it. Every password here is made of
the pieces Zq9 and Wv7, so that a piece of it shown anywhere is seen."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.errors import UsageError
from dispatcher.journal.uri import parse_journal_uri, refuse_other_scheme
from dispatcher.observe.metrics import parse_gateway, shown_url
from dispatcher.pacing.store import parse_store
from tests.conftest import cli, jobs_of

PIECES = ("Zq9", "Wv7")
SPILLED = "a user name or password with / ? or # in it must be percent-encoded (%2F %3F %23)"
PORT = "the port must be a number from 1 to 65535"
IPV6 = "an IPv6 address goes between [ and ], as in [::1]"


def secret_free(*texts: str) -> bool:
    return not any(piece in text for text in texts for piece in PIECES)


# -- the journal ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "shown", "password"),
    [
        (
            "postgresql://ops:Zq9%40Wv7@db.internal/jobs?journal=run",
            "postgresql://ops@db.internal:5432/jobs?journal=run",
            "Zq9@Wv7",
        ),
        (
            "postgres://ops:Zq9%2FWv7%3A@[::1]:6432/jobs?journal=run&sslmode=require",
            "postgresql://ops@[::1]:6432/jobs?journal=run",
            "Zq9/Wv7:",
        ),
        ("postgresql://ops@DB.internal/jobs?journal=run", "postgresql://ops@db.internal:5432/jobs?journal=run", ""),
        (
            "postgresql://:Zq9Wv7@/jobs?journal=run&host=/run/postgresql",
            "postgresql://localhost:5432/jobs?journal=run",
            "Zq9Wv7",
        ),
        (
            "postgresql:///jobs?host=/run/postgresql&password=Zq9Wv7&journal=run",
            "postgresql://localhost:5432/jobs?journal=run",
            "Zq9Wv7",
        ),
    ],
)
def test_a_journal_uri_is_shown_without_its_password(uri: str, shown: str, password: str) -> None:
    journal = parse_journal_uri(uri)
    assert (journal.shown, str(journal), journal.password) == (shown, shown, password)
    assert secret_free(repr(journal))


def test_a_journal_uri_shown_is_one_that_names_the_same_journal() -> None:
    """Messages say `dispatcher work URI` with the shown form: it must reach the same user, host and
    database, so an encoded user name or database name stays encoded."""
    journal = parse_journal_uri("postgresql://me%40corp:Zq9Wv7@db.internal/my%20db?journal=run")
    assert journal.shown == "postgresql://me%40corp@db.internal:5432/my%20db?journal=run"
    again = parse_journal_uri(journal.shown)
    assert (again.shown, again.conninfo) == (journal.shown, "postgresql://me%40corp@db.internal:5432/my%20db")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "postgresql://ops:Zq9/Wv7@db/jobs?journal=run&password=Zq9Wv7",
            f"--out postgresql://db/jobs?journal=run: {SPILLED}",
        ),
        ("postgresql://ops:Zq9?Wv7@db/jobs?journal=run", f"--out postgresql://db/jobs?journal=run: {SPILLED}"),
        ("postgresql://ops:Zq9#Wv7@db/jobs?journal=run", f"--out postgresql://db/jobs?journal=run: {SPILLED}"),
        # After a ? the rest of the password reads as a query parameter's value, and so does a raw @ in
        # one: what follows that @ may be the end of a password, and is not shown either.
        ("postgresql://ops:Zq9?x=Wv7@db/jobs?journal=run", f"--out postgresql://[redacted]: {SPILLED}"),
        ("postgresql://db/jobs?journal=run&password=Zq9@Wv7", f"--out postgresql://[redacted]: {SPILLED}"),
        ("postgresql://ops:Zq9Wv7@[::1/jobs?journal=run", f"--out postgresql://ops@[::1/jobs: {IPV6}"),
        ("postgresql://ops:Zq9Wv7@db:0/jobs?journal=run", f"--out postgresql://ops@db:0/jobs: {PORT}"),
        ("postgresql://ops:Zq9Wv7@db:5432x/jobs?journal=run", f"--out postgresql://ops@db:5432x/jobs: {PORT}"),
        (
            "postgresql://ops:Zq9Wv7@db/jobs?journal=a/b",
            "--out postgresql://ops@db/jobs: name the run's journal once, as ?journal=NAME (letters, digits, _ . : -; "
            "at most 100)",
        ),
    ],
)
def test_a_bad_journal_uri_is_refused_without_its_password(uri: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_journal_uri(uri)
    assert str(refused.value) == message
    assert secret_free(str(refused.value))


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("pg://ops:Zq9Wv7@db.internal/jobs?journal=run", "pg://ops@db.internal/jobs"),
        ("pg://ops:Zq9/Wv7@db.internal/jobs?journal=run", "pg://db.internal/jobs"),
        ("redis://:Zq9?Wv7@db.internal:6379/0", "redis://db.internal:6379/0"),
    ],
)
def test_another_scheme_where_a_journal_goes_is_refused_without_its_password(uri: str, shown: str) -> None:
    with pytest.raises(UsageError) as refused:
        refuse_other_scheme(uri, "--out")
    assert str(refused.value) == f"--out {shown}: a journal is a file path or postgresql://host/dbname?journal=NAME"


# -- the rate store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "shown", "password"),
    [
        ("redis://ops:Zq9%40Wv7@cache.internal:6380/0?prefix=t:", "redis://cache.internal:6380/0?prefix=t:", "Zq9@Wv7"),
        ("rediss://:Zq9%2FWv7%3A@[::1]:6380", "rediss://[::1]:6380", "Zq9/Wv7:"),
        ("redis://Zq9Wv7@cache.internal", "redis://cache.internal", ""),  # a user alone may be a token
        ("unix://:Zq9Wv7@/run/redis.sock?prefix=a:", "unix:///run/redis.sock?prefix=a:", "Zq9Wv7"),
        (
            "postgresql://app:Zq9Wv7@db.internal/jobs?journal=run&password=Zq9Wv7&prefix=team:",
            "postgresql://db.internal/jobs?prefix=team:",
            "Zq9Wv7",
        ),
        ("postgresql:///jobs?host=/run/postgresql&password=Zq9Wv7", "postgresql:///jobs", "Zq9Wv7"),
        ("postgresql://app:Zq9Wv7@[::1]:5432,db2:5433/jobs", "postgresql://[::1]:5432,db2:5433/jobs", "Zq9Wv7"),
    ],
)
def test_a_rate_store_uri_is_shown_without_its_user_or_password(uri: str, shown: str, password: str) -> None:
    store = parse_store(uri)
    assert (store.shown, store.password) == (shown, password)
    assert secret_free(repr(store))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("redis://ops:Zq9?x=Wv7@cache.internal:6380/0", f"--rate-store redis://[redacted]: {SPILLED}"),
        # `ops:12` before the ? reads as a host and a port: it must never be reached, nor shown
        ("redis://ops:12?x=Zq9Wv7@cache.internal:6380/0", f"--rate-store redis://[redacted]: {SPILLED}"),
        (
            "postgresql://app:Zq9/Wv7@db/jobs?password=Zq9Wv7&prefix=t:",
            f"--rate-store postgresql://db/jobs?prefix=t:: {SPILLED}",
        ),
        ("postgresql://db/jobs?password=Zq9@Wv7", f"--rate-store postgresql://[redacted]: {SPILLED}"),
        ("redis://:Zq9Wv7@[::1:6380/0", f"--rate-store redis://[::1:6380/0: {IPV6}"),
        ("redis://:Zq9Wv7@cache.internal:0/0", f"--rate-store redis://cache.internal:0/0: {PORT}"),
        ("postgresql://app:Zq9Wv7@db:5432,db2:99999/jobs", f"--rate-store postgresql://db:5432,db2:99999/jobs: {PORT}"),
        (
            "http://app:Zq9Wv7@cache.internal",
            "--rate-store http://cache.internal: use memory://, redis://, rediss://, unix:///path or postgresql://",
        ),
    ],
)
def test_a_bad_rate_store_uri_is_refused_without_its_user_or_password(uri: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_store(uri)
    assert str(refused.value) == message
    assert secret_free(str(refused.value))


# -- the Pushgateway -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "sent_to", "user", "password"),
    [
        (
            "http://ops:Zq9%40Wv7@127.0.0.1:9091/",
            "http://ops:[redacted]@127.0.0.1:9091/",
            "http://127.0.0.1:9091",
            "ops",
            "Zq9@Wv7",
        ),
        (
            "https://ops:Zq9%2FWv7%3A@[::1]:9091",
            "https://ops:[redacted]@[::1]:9091",
            "https://[::1]:9091",
            "ops",
            "Zq9/Wv7:",
        ),
        ("Zq9Wv7@pushgateway:9091", "[redacted]@pushgateway:9091", "http://pushgateway:9091", "Zq9Wv7", None),
        ("http://:Zq9Wv7@pushgateway", "http://:[redacted]@pushgateway", "http://pushgateway", "", "Zq9Wv7"),
    ],
)
def test_a_pushgateway_url_is_shown_without_its_password(
    url: str, shown: str, sent_to: str, user: str, password: str | None
) -> None:
    gateway = parse_gateway(url)
    assert (shown_url(url), gateway.url, gateway.username, gateway.password) == (shown, sent_to, user, password)
    assert "Wv7" not in repr(gateway)


@pytest.mark.parametrize(
    ("url", "shown", "reason"),
    [
        ("http://ops:Zq9/Wv7@127.0.0.1:9091", "http://[redacted]@127.0.0.1:9091", "percent-encode a / ? or #"),
        ("http://ops:Zq9?x=Wv7@127.0.0.1:9091", "http://[redacted]", "percent-encode a / ? or #"),
        ("http://ops:Zq9Wv7@[::1:9091", "http://ops:[redacted]@[::1:9091", "give an http:// or https:// URL"),
        ("http://ops:Zq9Wv7@127.0.0.1:0", "http://ops:[redacted]@127.0.0.1:0", "give an http:// or https:// URL"),
        ("ftp://ops:Zq9Wv7@127.0.0.1", "ftp://ops:[redacted]@127.0.0.1", "give an http:// or https:// URL"),
    ],
)
def test_a_bad_pushgateway_url_is_refused_without_its_password(url: str, shown: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_gateway(url)
    assert str(refused.value).startswith(reason)
    assert shown_url(url) == shown
    assert secret_free(str(refused.value), shown_url(url))


# -- through the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            ("--out", "postgresql://ops:Zq9Wv7@[::1/jobs?journal=run"),
            f"dispatcher: error: --out postgresql://ops@[::1/jobs: {IPV6}",
        ),
        (
            ("--rate-store", "redis://ops:12?x=Zq9Wv7@cache.internal:6380/0"),
            f"dispatcher: error: --rate-store redis://[redacted]: {SPILLED}",
        ),
        (
            ("--pushgateway", "http://ops:Zq9?x=Wv7@127.0.0.1:9091"),
            "dispatcher: error: --pushgateway http://[redacted]: percent-encode a / ? or # in the user name or "
            "password",
        ),
    ],
)
def test_each_kind_refused_by_the_command_line_is_one_line_without_the_password(
    tmp_path: Path, flags: tuple[str, str], line: str
) -> None:
    out = ("--out", str(tmp_path / "out.jsonl")) if flags[0] != "--out" else ()
    done = cli("send", str(jobs_of(tmp_path / "jobs.jsonl", 1)), "--sandbox", *out, *flags, cwd=tmp_path)
    assert (done.returncode, done.stderr.splitlines()) == (2, [line])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]


def test_a_clients_parameters_reach_it_as_written() -> None:
    """A space in libpq's `options` (%20) is passed on as written: decoded and encoded again it was '+',
    which libpq takes as it is, and the database refused the option."""
    query = "options=-c%20statement_timeout%3D5000&sslmode=prefer"
    journal = parse_journal_uri(f"postgresql://me@db.internal/app?{query}&journal=nightly")
    assert journal.conninfo == f"postgresql://me@db.internal/app?{query}"
    store = parse_store(f"postgresql://me@db.internal/app?{query}&prefix=b1:")
    assert store.url == f"postgresql://me@db.internal/app?{query}"
    assert parse_store("redis://127.0.0.1:6379/0?prefix=x&socket_timeout=2").url == (
        "redis://127.0.0.1:6379/0?socket_timeout=2"
    )
