"""The three kinds of URI the dispatcher takes (a journal's, a rate store's, a Pushgateway's), each given a
password: its shown form, and every refusal, never hold any part of it. Every password here is made of
the pieces Zq9 and Wv7, so that a piece of it shown anywhere is seen."""

from __future__ import annotations

import pytest

from dispatcher.errors import UsageError
from dispatcher.journal.uri import parse_journal_uri, refuse_other_scheme

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
