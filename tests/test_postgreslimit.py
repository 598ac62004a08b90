"""The shared budget in a real PostgreSQL: several processes on one budget, the shared pause and
pace, another rate or quota refused, the objects it makes, the store URI, and the database's faults.
What every limiter promises is in test_limiter_contract."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator

import pytest

from dispatcher.errors import ConfigError, RateStoreError, UsageError
from dispatcher.pacing.base import Quota
from dispatcher.pacing.postgres import PostgresLimiter, connect
from dispatcher.pacing.store import check_available, open_limiter, parse_store
from tests.conftest import (
    PG_PASSWORD,
    FakeClock,
    PostgresServer,
    as_new,
    free_port,
    in_virtual_time_on_postgres,
    max_in_any_window,
    wait_until,
)

KEY = "dispatcher:budget:1400000000:/v4/group_open_http_svc/send_group_system_notification"
QUOTA_KEY = "dispatcher:budget:1400000000:/v4/openim/batchsendmsg"
LOST_TAIL = "; no new requests start, those in flight are recorded; resume with --resume when it is back"


@pytest.fixture
def postgres_server(module_postgres: PostgresServer) -> PostgresServer:
    """One server for the module's tests, each finding it as a new one (`as_new`)."""
    return as_new(module_postgres)


@pytest.fixture
async def limiters(postgres_server: PostgresServer, clock: FakeClock) -> AsyncIterator[list[PostgresLimiter]]:
    """Three limiters on one budget, as three processes would hold them, in virtual time."""
    made = [await in_virtual_time_on_postgres(postgres_server, clock, rate=200, start=1.0) for _ in range(3)]
    yield made
    for limiter in made:
        await limiter.aclose()


async def slots_of(limiter: PostgresLimiter, clock: FakeClock, n: int) -> list[float]:
    starts = []
    for _ in range(n):
        await limiter.acquire()
        starts.append(clock.now)
    return starts


async def test_three_processes_share_one_budget(limiters: list[PostgresLimiter], clock: FakeClock) -> None:
    starts = []
    for i in range(600):
        await limiters[i % 3].acquire()
        starts.append(clock.now)
    assert max_in_any_window(starts) == 197  # together, not 3 x 197
    assert (len(starts) - 1) / (starts[-1] - starts[0]) == pytest.approx(196.27, abs=0.01)


async def test_two_limiters_in_one_test_share_the_budget_and_its_row(
    postgres_server: PostgresServer, clock: FakeClock
) -> None:
    """One row per budget, whichever of them takes the slot: the second's first slot is the one
    after the first's, not a slot of its own at the same time."""
    one, two = [await in_virtual_time_on_postgres(postgres_server, clock, start=1.0) for _ in range(2)]
    await one.acquire()
    first = clock.now
    await two.acquire()
    assert round(clock.now - first, 6) == 0.0021  # 5.1 ms less the 3 ms a slot may come early
    assert postgres_server.psql("SELECT key, rate, quota FROM dispatcher.budget") == f"{KEY}|200|\n"
    for limiter in (one, two):
        await limiter.aclose()


async def test_a_fleet_begins_at_96_5_percent_of_the_rate(postgres_server: PostgresServer, clock: FakeClock) -> None:
    """Processes that share a budget keep closer to its pace than one process keeps to its own (each
    grant raced for, none lost to a late wake-up), and its grants reach their writes through the
    store: they begin at 96.5% of the rate, where one process begins at 97.5%. Three of them take
    194 slots in their first second together, not 196."""
    fleet = [await in_virtual_time_on_postgres(postgres_server, clock) for _ in range(3)]
    starts: list[float] = []
    while not starts or starts[-1] < starts[0] + 1.2:
        await fleet[len(starts) % 3].acquire()
        starts.append(clock.now)
    assert len([t for t in starts if t < starts[0] + 1]) == 194
    assert [limiter.pace for limiter in fleet] == pytest.approx([193.0] * 3, abs=0.2)
    for limiter in fleet:
        await limiter.aclose()


async def test_a_step_down_slows_every_process_of_the_budget(postgres_server: PostgresServer, clock: FakeClock) -> None:
    """As in Redis: a reply 60007 to one process steps the shared pace down from 193 to 188.18 a
    second for both, once for a window; a process that joins paces at it."""
    one, two = [await in_virtual_time_on_postgres(postgres_server, clock) for _ in range(2)]
    for i in range(10):
        await (one, two)[i % 2].acquire()
    assert [one.pace, two.pace] == pytest.approx([193.0, 193.0], abs=0.02)
    assert await one.over_rate(0.3) == pytest.approx(188.18, abs=0.02)
    starts = await slots_of(two, clock, 5)
    assert two.pace == pytest.approx(188.18, abs=0.02)
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)][1:] == [0.005315] * 3
    clock.now += 0.5
    assert await two.over_rate(0.6) is None
    assert await one.over_rate(0.6) is None
    three = await in_virtual_time_on_postgres(postgres_server, clock)
    await three.acquire()
    assert three.pace == pytest.approx(188.22, abs=0.02)
    for limiter in (one, two, three):
        await limiter.aclose()


async def test_a_pause_holds_every_process(limiters: list[PostgresLimiter], clock: FakeClock) -> None:
    """70050 seen by one process: the others wait too, even after the first has exited."""
    first, second, _ = limiters
    await second.acquire()
    paused_at = clock.now
    first.pause(60)
    await first.aclose()  # lets the pause land
    await second.acquire()
    assert clock.now - paused_at == pytest.approx(60.0, abs=1e-6)


async def test_a_different_rate_is_refused_until_the_row_is_deleted(
    limiters: list[PostgresLimiter], postgres_server: PostgresServer, clock: FakeClock
) -> None:
    with pytest.raises(RateStoreError) as refused:
        await in_virtual_time_on_postgres(postgres_server, clock, rate=100)
    assert str(refused.value) == (
        f"the shared budget {KEY} in postgresql://127.0.0.1:{postgres_server.port}/postgres holds --rate 200, and "
        "this run asks for --rate 100: run with --rate 200, or change the budget by deleting its row (DELETE FROM "
        f"dispatcher.budget WHERE key = '{KEY}') once no run uses it, or wait for it to expire (600 s after its "
        "last use)"
    )
    postgres_server.psql(f"DELETE FROM dispatcher.budget WHERE key = '{KEY}'")
    other = await in_virtual_time_on_postgres(postgres_server, clock, rate=100)
    await other.aclose()


async def test_a_different_quota_is_refused(postgres_server: PostgresServer) -> None:
    store = parse_store(postgres_server.url)
    first = await connect(store, rate=200, quota=Quota(12_000, 60), key=QUOTA_KEY)
    with pytest.raises(RateStoreError) as refused:
        await connect(store, rate=200, quota=Quota(10_000, 60), key=QUOTA_KEY)
    assert str(refused.value) == (
        f"the shared budget {QUOTA_KEY} in postgresql://127.0.0.1:{postgres_server.port}/postgres holds a quota of "
        "12000 units per 60 s, and this run asks for a quota of 10000 units per 60 s: run with the budget's quota, "
        f"or change the budget by deleting its row (DELETE FROM dispatcher.budget WHERE key = '{QUOTA_KEY}') once "
        "no run uses it, or wait for it to expire (600 s after its last use)"
    )
    with pytest.raises(RateStoreError, match="holds a quota of 12000 units per 60 s, and this run asks for no quota"):
        await connect(store, rate=200, key=QUOTA_KEY)
    await first.aclose()


async def test_an_unused_budget_expires_and_another_rate_may_then_claim_it(
    postgres_server: PostgresServer, clock: FakeClock
) -> None:
    """Ten minutes after its last use a budget is gone, as a Redis key's TTL would have it."""
    first = await in_virtual_time_on_postgres(postgres_server, clock, rate=200)
    await first.acquire()
    await first.aclose()
    clock.now += 599
    with pytest.raises(RateStoreError, match="holds --rate 200, and this run asks for --rate 100"):
        await in_virtual_time_on_postgres(postgres_server, clock, rate=100)
    clock.now += 2
    other = await in_virtual_time_on_postgres(postgres_server, clock, rate=100)
    await other.acquire()
    await other.aclose()
    assert postgres_server.psql("SELECT rate FROM dispatcher.budget") == "100\n"


async def test_the_objects_are_made_once_in_the_dispatcher_schema_with_their_version(
    postgres_server: PostgresServer, clock: FakeClock
) -> None:
    made = [await in_virtual_time_on_postgres(postgres_server, clock) for _ in range(2)]
    assert postgres_server.psql("SELECT component, version FROM dispatcher.meta") == "budget|2\n"
    tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'dispatcher' ORDER BY 1"
    assert postgres_server.psql(tables) == "budget\nbudget_log\nmeta\n"
    functions = "SELECT proname FROM pg_proc WHERE pronamespace = 'dispatcher'::regnamespace ORDER BY 1"
    assert postgres_server.psql(functions) == "budget_pause\nbudget_step_down\nbudget_take\n"
    for limiter in made:
        await limiter.aclose()
    postgres_server.psql("UPDATE dispatcher.meta SET version = 3 WHERE component = 'budget'")
    with pytest.raises(RateStoreError) as refused:
        await in_virtual_time_on_postgres(postgres_server, clock)
    assert str(refused.value) == (
        f"the rate store postgresql://127.0.0.1:{postgres_server.port}/postgres holds the budget's tables at "
        "version 3, newer than this dispatcher's (2): run a dispatcher as new as the one that made them"
    )


# What version 2 added to version 1: three columns, and TAKE and STEP_DOWN with more arguments.
TAKE_OF_VERSION_2 = "dispatcher.budget_take(text, text, text" + ", bigint" * 14 + ")"
STEP_DOWN_OF_VERSION_2 = "dispatcher.budget_step_down(text" + ", bigint" * 13 + ")"


async def test_a_budget_of_version_1_is_migrated_and_keeps_its_rate(
    postgres_server: PostgresServer, clock: FakeClock
) -> None:
    """A database whose budget a dispatcher of version 1 made: the first process of version 2 adds
    what it needs, once, and the budget keeps the rate it was claimed at."""
    made = await in_virtual_time_on_postgres(postgres_server, clock)
    await made.acquire()
    await made.aclose()
    postgres_server.psql(
        f"DROP FUNCTION {TAKE_OF_VERSION_2}; DROP FUNCTION {STEP_DOWN_OF_VERSION_2}; "
        "ALTER TABLE dispatcher.budget DROP COLUMN slots, DROP COLUMN refused, DROP COLUMN taken; "
        "UPDATE dispatcher.meta SET version = 1 WHERE component = 'budget'"
    )
    with pytest.raises(RateStoreError, match="holds --rate 200, and this run asks for --rate 100"):
        await in_virtual_time_on_postgres(postgres_server, clock, rate=100)
    assert postgres_server.psql("SELECT component, version FROM dispatcher.meta") == "budget|2\n"
    one, two = [await in_virtual_time_on_postgres(postgres_server, clock) for _ in range(2)]
    await one.acquire()
    assert await two.over_rate(0.0) == pytest.approx(188.18, abs=0.02)
    for limiter in (one, two):
        await limiter.aclose()


async def test_many_processes_making_the_objects_at_once_make_them_once(postgres_server: PostgresServer) -> None:
    store = parse_store(postgres_server.url)
    made = await asyncio.gather(*(connect(store, rate=200, key=KEY) for _ in range(6)))
    assert postgres_server.psql("SELECT component, version FROM dispatcher.meta") == "budget|2\n"
    for limiter in made:
        await limiter.aclose()


async def test_the_budget_is_timed_by_the_databases_clock(postgres_server: PostgresServer) -> None:
    """With no virtual clock, a slot's time is the database's: its row's tat is within a second of
    the database's clock_timestamp(), whatever this process's clock says."""
    limiter = await connect(parse_store(postgres_server.url), rate=200, key=KEY)
    await limiter.acquire()
    await limiter.aclose()
    skew = "SELECT abs(tat - extract(epoch FROM clock_timestamp()) * 1000000) < 1000000 FROM dispatcher.budget"
    assert postgres_server.psql(skew) == "t\n"


async def test_unreachable_at_start_names_host_and_port_never_the_password() -> None:
    port = free_port()
    store = parse_store(f"postgresql://postgres:sekrit-pw@127.0.0.1:{port}/postgres?journal=run")
    with pytest.raises(RateStoreError) as refused:
        await connect(store, rate=200, key=KEY)
    message = str(refused.value)
    assert message.startswith(
        f"cannot reach the rate store postgresql://127.0.0.1:{port}/postgres: connection failed: connection to "
        f'server at "127.0.0.1", port {port} failed: Connection refused'
    )
    assert "\n" not in message and "sekrit-pw" not in message


async def test_a_wrong_password_is_refused_without_showing_it(postgres_server: PostgresServer) -> None:
    store = parse_store(f"postgresql://postgres:wrong-pw@127.0.0.1:{postgres_server.port}/postgres")
    with pytest.raises(RateStoreError) as refused:
        await connect(store, rate=200, key=KEY)
    assert str(refused.value) == (
        f"cannot reach the rate store postgresql://127.0.0.1:{postgres_server.port}/postgres: connection failed: "
        f'connection to server at "127.0.0.1", port {postgres_server.port} failed: FATAL: password authentication '
        'failed for user "postgres"'
    )
    assert "wrong-pw" not in repr(store) and "wrong-pw" not in str(refused.value)


async def test_lost_mid_run_raises_on_the_next_slot_and_a_new_run_goes_on_once_it_is_back(
    postgres_server: PostgresServer,
) -> None:
    store = parse_store(postgres_server.url)
    limiter = await connect(store, rate=1000, key=KEY)
    await limiter.acquire()
    postgres_server.kill()
    with pytest.raises(RateStoreError) as lost:
        await limiter.acquire()
    message = str(lost.value)
    assert message.startswith(f"lost the rate store postgresql://127.0.0.1:{postgres_server.port}/postgres: ")
    assert message.endswith(LOST_TAIL)
    assert PG_PASSWORD not in message and "\n" not in message
    await limiter.aclose()
    postgres_server.start()
    resumed = await connect(store, rate=1000, key=KEY)  # the budget's row is still there, at --rate 1000
    await resumed.acquire()
    await resumed.aclose()
    with pytest.raises(RateStoreError, match="holds --rate 1000, and this run asks for --rate 200"):
        await connect(store, rate=200, key=KEY)


async def test_a_dropped_connection_is_not_a_lost_store(postgres_server: PostgresServer) -> None:
    """A connection the server cuts (a failover, pg_terminate_backend) is made again at once."""
    limiter = await connect(parse_store(postgres_server.url), rate=1000, key=KEY)
    await limiter.acquire()
    cut = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    cut += " AND pid <> pg_backend_pid()"
    assert postgres_server.psql(cut) == "1\n"
    await limiter.acquire()
    await limiter.acquire()
    await limiter.aclose()


async def test_a_database_that_holds_the_budget_past_the_timeout_is_lost_after_one_slot(
    postgres_server: PostgresServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session holds the budget's row (a long transaction, a stuck lock): no answer within
    the timeout is a lost store, not asked again; once it is let go, a new ask gets its slot."""
    from dispatcher.pacing import postgres

    monkeypatch.setattr(postgres, "TIMEOUT_S", 0.2)  # real seconds: the stall is a real lock's
    limiter = await in_virtual_time_on_postgres(postgres_server, clock, rate=200)
    await limiter.acquire()
    import psycopg

    holder = await psycopg.AsyncConnection.connect(postgres_server.url)  # a transaction left open
    await holder.execute("SELECT 1 FROM dispatcher.budget FOR UPDATE")
    with pytest.raises(RateStoreError) as lost:
        await limiter.acquire()
    assert str(lost.value) == (
        f"lost the rate store postgresql://127.0.0.1:{postgres_server.port}/postgres: no answer within 0.2 s"
        + LOST_TAIL
    )
    await holder.rollback()
    await holder.close()
    await limiter.acquire()
    await limiter.aclose()


async def test_a_take_given_up_on_is_ended_by_the_database_too_and_takes_no_slot(
    postgres_server: PostgresServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget's session has a statement_timeout and a lock_timeout (twice the limiter's own bound):
    a TAKE that waits on the budget's row is ended by the database too once the limiter gave up on
    it. Before, it waited on in the database, and took a slot for nobody once the row was let go."""
    from dispatcher.pacing import postgres

    monkeypatch.setattr(postgres, "TIMEOUT_S", 0.2)  # real seconds: the stall is a real lock's
    limiter = await in_virtual_time_on_postgres(postgres_server, clock, rate=200)
    await limiter.acquire()
    import psycopg

    holder = await psycopg.AsyncConnection.connect(postgres_server.url)  # a transaction left open
    await holder.execute("SELECT 1 FROM dispatcher.budget FOR UPDATE")
    with pytest.raises(RateStoreError):
        await limiter.acquire()
    wait_until(lambda: postgres_server.psql("SELECT count(*) FROM pg_locks WHERE NOT granted") == "0\n")
    await holder.rollback()
    await holder.close()
    assert postgres_server.psql("SELECT taken FROM dispatcher.budget") == "1\n"
    await limiter.aclose()


@pytest.mark.parametrize(
    ("uri", "shown", "prefix"),
    [
        ("postgresql://127.0.0.1/db", "postgresql://127.0.0.1/db", "dispatcher:"),
        ("postgres://app:pw@db.internal:6432/jobs", "postgres://db.internal:6432/jobs", "dispatcher:"),
        (
            "postgresql://app:pw@db.internal/jobs?journal=nightly&sslmode=require&password=pw&prefix=team-a:",
            "postgresql://db.internal/jobs?prefix=team-a:",
            "team-a:",
        ),
        ("postgresql://app@h1:5432,h2:5433/jobs", "postgresql://h1:5432,h2:5433/jobs", "dispatcher:"),
        ("postgresql:///jobs?host=/run/postgresql", "postgresql:///jobs", "dispatcher:"),
    ],
)
def test_store_uris(uri: str, shown: str, prefix: str) -> None:
    store = parse_store(uri)
    assert (store.shown, store.prefix, store.is_postgres) == (shown, prefix, True)
    assert "pw" not in repr(store) and "app" not in repr(store)


def test_what_libpq_is_given_keeps_its_parameters_and_drops_ours() -> None:
    store = parse_store("postgresql://app:pw@db.internal/jobs?journal=nightly&sslmode=require&prefix=team-a:")
    assert store.url == "postgresql://app:pw@db.internal/jobs?sslmode=require"
    assert store.password == "pw"


async def test_a_journal_uri_as_the_store_is_the_budget_in_that_database(postgres_server: PostgresServer) -> None:
    """The journal's URI (`?journal=NAME`) given as the store: the budget ignores the name, and
    runs on journals of the same database share one budget."""
    stores = [parse_store(postgres_server.journal(name)) for name in ("nightly", "announce")]
    async with (
        open_limiter(stores[0], rate=200, sdkappid=1400000000, api_path="/v4/x") as one,
        open_limiter(stores[1], rate=200, sdkappid=1400000000, api_path="/v4/x") as two,
    ):
        await one.acquire()
        await two.acquire()
    assert postgres_server.psql("SELECT key FROM dispatcher.budget") == "dispatcher:budget:1400000000:/v4/x\n"


def test_a_bad_port_is_refused_without_the_password() -> None:
    with pytest.raises(UsageError) as bad:
        parse_store("postgresql://app:pw@db.internal:99999/jobs")
    assert (
        str(bad.value) == "--rate-store postgresql://db.internal:99999/jobs: the port must be a number from 1 to 65535"
    )


def test_without_the_extra_a_postgres_store_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ConfigError) as missing:
        check_available(parse_store("postgresql://app:pw@db.internal/jobs"))
    assert str(missing.value) == (
        "--rate-store postgresql://db.internal/jobs needs the postgres extra: pip install 'tim-dispatcher[postgres]'"
    )
    assert missing.value.exit_code == 2


async def test_slots_steps_and_pauses_of_one_process_at_once_each_get_their_own_answer(
    postgres_server: PostgresServer, clock: FakeClock
) -> None:
    """Workers take slots while others report "too frequent" and a 70050 pause is written, on the
    limiter's one connection: the slots are granted, the pace steps once, the pause holds."""
    limiter = await in_virtual_time_on_postgres(postgres_server, clock)
    await limiter.acquire()
    started = clock.now
    results = await asyncio.gather(*(limiter.acquire() for _ in range(20)), *(limiter.over_rate(0.0) for _ in range(5)))
    steps = [pace for pace in results[20:] if pace is not None]
    assert steps == [pytest.approx(188.18, abs=0.02)]  # one step for the window, whoever asked first
    limiter.pause(60)
    await limiter.acquire()
    assert clock.now - started >= 60
    await limiter.aclose()
