"""The three kinds of URI the dispatcher takes (a journal's, a rate store's, a Pushgateway's), each given a
password: its shown form, and every refusal, never hold any part of it. Every password here is made of
the pieces Zq9 and Wv7, so that a piece of it shown anywhere is seen."""

from __future__ import annotations

import pytest

from dispatcher.errors import UsageError
from dispatcher.journal.uri import parse_journal_uri, refuse_other_scheme
from dispatcher.pacing.store import parse_store

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
