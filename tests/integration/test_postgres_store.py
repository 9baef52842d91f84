"""PostgresStore on a real PostgreSQL: migrations, several processes, claims, dead connections.

The behaviour every store shares is in ``tests/unit/test_store_contract.py``; this file holds
what only the PostgreSQL backend has. Each test gets an empty database of the session's server
(``postgres_dsn``); tests that stop a server start one of their own.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
psycopg_pool = pytest.importorskip("psycopg_pool", reason="the postgres extra is not installed")

from replytrack.errors import ConfigError, StoreError  # noqa: E402
from replytrack.store import Migration, Pruned, SentMessage  # noqa: E402
from replytrack.store import postgres as postgres_module  # noqa: E402
from replytrack.store.postgres import PostgresStore  # noqa: E402
from servers import PostgreSQL, free_port  # noqa: E402

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
LEASE = dt.timedelta(minutes=5)
LATEST = PostgresStore.MIGRATIONS[-1].version


def sent(mid: str, ref: str = "c1:p1", **kwargs: object) -> SentMessage:
    kwargs.setdefault("subject", "Quick question")
    kwargs.setdefault("sent_at", T0)
    return SentMessage(mid, ref, "rep@vendor.example", ("pat@prospect.example",), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def admin(postgres_dsn: str) -> Iterator[Any]:
    """A plain autocommit connection to the test's database, for looking behind the store."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def store(postgres_dsn: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_dsn) as opened:
        yield opened


def tables(admin: Any, schema: str) -> set[str]:
    rows = admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    ).fetchall()
    return {name for (name,) in rows}


def run(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def results(procs: list[subprocess.Popen[str]], timeout: float = 120) -> list[Any]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


# --------------------------------------------------------------------------------------------
# The schema and its migrations
# --------------------------------------------------------------------------------------------

EXPECTED_TABLES = {
    "sends",
    "message_ids",
    "subject_index",
    "incoming",
    "processed",
    "outbox",
    "cursors",
    "leases",
    "schema_migrations",
}


def test_an_empty_database_gets_the_current_schema(store: PostgresStore, admin: Any) -> None:
    assert store.schema == "replytrack"
    assert store.schema_version == LATEST
    assert tables(admin, "replytrack") == EXPECTED_TABLES
    assert tables(admin, "public") == set()
    rows = admin.execute("SELECT version, description FROM replytrack.schema_migrations")
    assert rows.fetchall() == [(m.version, m.description) for m in PostgresStore.MIGRATIONS]


def test_times_are_timestamptz_and_payloads_bytea(store: PostgresStore, admin: Any) -> None:
    types = dict(
        admin.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'replytrack' AND table_name IN ('sends', 'outbox')"
        ).fetchall()
    )
    assert types["sent_at"] == types["created_at"] == "timestamp with time zone"
    assert types["payload"] == types["thread_index"] == "bytea"


def test_a_schema_of_its_own_keeps_installations_apart(postgres_dsn: str, admin: Any) -> None:
    with (
        PostgresStore(postgres_dsn, schema="tenant_a") as a,
        PostgresStore(postgres_dsn, schema="tenant_b") as b,
    ):
        a.record_sent(sent("s1@x.example"))
        assert a.find_sent(["s1@x.example"])
        assert b.find_sent(["s1@x.example"]) == {}
    assert tables(admin, "tenant_a") == tables(admin, "tenant_b") == EXPECTED_TABLES
    assert tables(admin, "replytrack") == set()


@pytest.mark.parametrize(
    "bad", ["", "Replytrack", "pg_replytrack", 'a"; DROP TABLE x; --', "a.b", "1abc", "x" * 64]
)
def test_a_schema_name_must_be_a_plain_identifier(postgres_dsn: str, bad: str) -> None:
    with pytest.raises(ConfigError, match="schema"):
        PostgresStore(postgres_dsn, schema=bad)


def test_the_store_opens_a_schema_someone_else_created(postgres_dsn: str, admin: Any) -> None:
    admin.execute("CREATE SCHEMA replytrack")
    with PostgresStore(postgres_dsn) as store:
        assert store.schema_version == LATEST


NEXT = Migration(
    LATEST + 1,
    "a campaign column on sends, and a notes table",
    (
        "ALTER TABLE sends ADD COLUMN campaign text",
        "UPDATE sends SET campaign = split_part(ref, ':', 1)",
        "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL)",
    ),
)


class StoreNext(PostgresStore):
    MIGRATIONS: ClassVar[tuple[Migration, ...]] = (*PostgresStore.MIGRATIONS, NEXT)


def test_opening_migrates_forward_and_keeps_the_data(postgres_dsn: str, admin: Any) -> None:
    with PostgresStore(postgres_dsn) as store:
        store.record_sent(sent("s1@x.example", "c42:p7"))
    with StoreNext(postgres_dsn) as store:
        assert store.schema_version == LATEST + 1
        assert store.find_sent(["s1@x.example"])
    assert admin.execute("SELECT campaign FROM replytrack.sends").fetchall() == [("c42",)]
    assert "notes" in tables(admin, "replytrack")
    assert "notes" not in tables(admin, "public")  # the migration ran in the store's schema
    with StoreNext(postgres_dsn) as store:  # opening again migrates nothing
        assert store.schema_version == LATEST + 1


def test_a_schema_newer_than_the_code_is_refused(postgres_dsn: str) -> None:
    with StoreNext(postgres_dsn):
        pass
    with pytest.raises(StoreError, match="newer"):
        PostgresStore(postgres_dsn)


def test_a_failing_migration_changes_nothing(postgres_dsn: str, admin: Any) -> None:
    class Broken(PostgresStore):
        MIGRATIONS: ClassVar[tuple[Migration, ...]] = (
            *PostgresStore.MIGRATIONS,
            Migration(LATEST + 1, "broken", ("CREATE TABLE good (x int)", "NOT SQL AT ALL")),
        )

    with pytest.raises(StoreError, match="migrate") as info:
        Broken(postgres_dsn)
    assert isinstance(info.value.__cause__, psycopg.errors.SyntaxError)
    # Everything was one transaction: not even the schema is left.
    assert tables(admin, "replytrack") == set()
    with PostgresStore(postgres_dsn) as store:
        assert store.schema_version == LATEST


def test_migrations_must_be_numbered_from_one_without_gaps(postgres_dsn: str) -> None:
    class Gap(PostgresStore):
        MIGRATIONS: ClassVar[tuple[Migration, ...]] = (
            *PostgresStore.MIGRATIONS,
            Migration(LATEST + 2, "gap", ()),
        )

    with pytest.raises(ConfigError, match="1, 2, 3"):
        Gap(postgres_dsn)


OPENER = """
    import json, sys, time
    from replytrack.store.postgres import PostgresStore

    dsn, start = sys.argv[1], float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))  # every process opens at the same moment
    with PostgresStore(dsn) as store:
        print(json.dumps({"version": store.schema_version}))
"""


def test_processes_opening_a_new_database_at_once_migrate_it_once(
    postgres_dsn: str, admin: Any
) -> None:
    start = time.time() + 2  # after every interpreter has started
    procs = [run(OPENER, postgres_dsn, str(start)) for _ in range(4)]
    assert results(procs) == [{"version": LATEST}] * 4
    rows = admin.execute("SELECT version FROM replytrack.schema_migrations ORDER BY version")
    assert rows.fetchall() == [(v,) for v in range(1, LATEST + 1)]


# --------------------------------------------------------------------------------------------
# Work sharing between processes
# --------------------------------------------------------------------------------------------

CLAIMER = """
    import datetime as dt, json, sys, time
    from replytrack.store.postgres import PostgresStore

    dsn, start = sys.argv[1], float(sys.argv[2])
    t0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone.utc)
    mine = []
    with PostgresStore(dsn) as store:
        time.sleep(max(0.0, start - time.time()))
        while batch := store.claim_outbox(t0, t0 + dt.timedelta(minutes=5), limit=7):
            mine += [e.entry_id for e in batch]
    print(json.dumps(mine))
"""


def test_processes_claiming_the_outbox_never_get_the_same_entry(
    store: PostgresStore, postgres_dsn: str
) -> None:
    with store.transaction() as tx:
        ids: list[int] = []
        for n in range(600):
            entry = tx.enqueue(f"ev-{n}", "crm_log", b"{}", T0)
            assert entry is not None  # a new event id: never a duplicate
            ids.append(entry)
    start = time.time() + 2
    procs = [run(CLAIMER, postgres_dsn, str(start)) for _ in range(4)]
    claimed = results(procs)
    every = [i for mine in claimed for i in mine]
    assert sorted(every) == sorted(ids)  # each entry once, none lost
    assert sum(1 for mine in claimed if mine) >= 2  # they really ran side by side
    assert store.claim_outbox(T0, T0 + LEASE) == []


def test_a_claim_skips_entries_another_transaction_holds(store: PostgresStore, admin: Any) -> None:
    with store.transaction() as tx:
        first = tx.enqueue("ev-1", "crm_log", b"{}", T0)
        second = tx.enqueue("ev-2", "crm_log", b"{}", T0 + dt.timedelta(seconds=1))
    later = T0 + dt.timedelta(minutes=1)
    with admin.transaction():
        admin.execute("SELECT 1 FROM replytrack.outbox WHERE id = %s FOR UPDATE", (first,))
        started = time.monotonic()
        claimed = store.claim_outbox(later, later + LEASE)
        assert time.monotonic() - started < 2  # no waiting for the lock
        assert [e.entry_id for e in claimed] == [second]
    assert [e.entry_id for e in store.claim_outbox(later, later + LEASE)] == [first]


LEASER = """
    import datetime as dt, json, sys, time
    from replytrack.store.postgres import PostgresStore

    dsn, worker, start, sources = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    t0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone.utc)
    won = []
    with PostgresStore(dsn) as store:
        time.sleep(max(0.0, start - time.time()))
        for n in range(sources):
            if store.claim_source(f"src-{n}", worker, t0, t0 + dt.timedelta(minutes=5)):
                won.append(n)
    print(json.dumps(won))
"""


def test_processes_racing_for_sources_have_one_winner_each(
    store: PostgresStore, postgres_dsn: str
) -> None:
    sources = 200
    start = time.time() + 2
    procs = [run(LEASER, postgres_dsn, f"w{k}", str(start), str(sources)) for k in range(4)]
    won = results(procs)
    every = [n for mine in won for n in mine]
    assert sorted(every) == list(range(sources))  # one winner per source
    for k, mine in enumerate(won):  # and each winner holds its leases
        for n in mine[:5]:
            assert store.claim_source(f"src-{n}", f"w{k}", T0, T0 + LEASE)
            assert not store.claim_source(f"src-{n}", "someone-else", T0, T0 + LEASE)


# --------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------


def test_prune_deletes_in_chunks_of_short_transactions(postgres_dsn: str, admin: Any) -> None:
    def xid() -> int:
        return int(admin.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0])

    with PostgresStore(postgres_dsn, prune_chunk=10) as store:
        with store.transaction() as tx:
            for n in range(35):
                tx.mark_processed(f"old-{n}", T0)
            tx.mark_processed("new", T0 + dt.timedelta(days=60))
            entries = [tx.enqueue(f"ev-{n}", "crm_log", b"{}", T0) for n in range(25)]
        for entry in entries:
            assert entry is not None
            store.mark_delivered(entry, T0)
        before = xid()
        assert store.prune(T0 + dt.timedelta(days=30)) == Pruned(35, 25)
        # 4 + 3 deleting statements, each a transaction of its own (xids 1 apart).
        assert xid() - before >= 7 + 1
        assert store.is_processed("new")


def test_prune_skips_rows_a_worker_holds_and_never_waits(store: PostgresStore, admin: Any) -> None:
    with store.transaction() as tx:
        for n in range(5):
            tx.mark_processed(f"old-{n}", T0)
    with admin.transaction():
        admin.execute("SELECT 1 FROM replytrack.processed WHERE key = 'old-3' FOR UPDATE")
        started = time.monotonic()
        assert store.prune(T0 + dt.timedelta(days=1)).ledger == 4
        assert time.monotonic() - started < 2
    assert store.prune(T0 + dt.timedelta(days=1)).ledger == 1  # the next prune takes it


# --------------------------------------------------------------------------------------------
# Connections: the pool, dead connections, unreachable servers
# --------------------------------------------------------------------------------------------


def terminate_others(admin: Any) -> int:
    """End every other backend on the test's database, as a server-side kill does."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


def test_killed_connections_are_replaced_and_reads_retry(postgres_dsn: str, admin: Any) -> None:
    with PostgresStore(postgres_dsn, min_size=2, max_size=4) as store:
        store.record_sent(sent("s1@x.example"))
        store.pool.wait(5)
        assert terminate_others(admin) >= 2
        # A lookup meets a dead connection, drops it, and is retried on a fresh one.
        assert store.find_sent(["s1@x.example"])
        assert terminate_others(admin) >= 1
        with store.transaction() as tx:  # BEGIN on a dead connection: retried too
            tx.mark_processed("k", T0)
        assert store.is_processed("k")


def test_every_dead_connection_of_the_pool_is_replaced_in_turn(
    postgres_dsn: str, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted server leaves every pooled connection dead, and the pool's own check can
    miss some (it races with the pool refilling itself): a lookup and a BEGIN get past them."""
    with PostgresStore(postgres_dsn, min_size=3, max_size=3) as store:
        store.record_sent(sent("s1@x.example"))
        store.pool.wait(5)
        monkeypatch.setattr(store.pool, "check", lambda: None)  # a check that finds nothing
        assert terminate_others(admin) == 3
        assert store.find_sent(["s1@x.example"])
        store.pool.wait(5)
        assert terminate_others(admin) == 3
        with store.transaction() as tx:
            tx.mark_processed("k", T0)
        assert store.is_processed("k")


def test_a_write_on_a_killed_connection_is_a_store_error_then_works(
    postgres_dsn: str, admin: Any
) -> None:
    with PostgresStore(postgres_dsn, min_size=1, max_size=1) as store:
        store.save_cursor("src", "1")
        terminate_others(admin)
        with pytest.raises(StoreError, match="save a cursor") as info:
            store.save_cursor("src", "2")  # not retried: a write may have happened
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        store.save_cursor("src", "3")
        assert store.load_cursor("src") == "3"


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgreSQL]:
    """A server of this module's own, which tests stop and start."""
    server = PostgreSQL()
    try:
        yield server
    finally:
        server.close()


def test_a_stopped_server_is_a_store_error_and_a_restart_recovers(own_server: PostgreSQL) -> None:
    with PostgresStore(own_server.dsn(), timeout=2) as store:
        store.record_sent(sent("s1@x.example"))
        own_server.stop()
        try:
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                store.find_sent(["s1@x.example"])
            assert isinstance(info.value.__cause__, psycopg.OperationalError)
            with pytest.raises(StoreError):
                store.record_sent(sent("s2@x.example"))
            assert time.monotonic() - started < 10  # bounded by the timeout
        finally:
            own_server.start()
        deadline = time.monotonic() + 10
        while True:  # the pool reconnects in the background
            try:
                assert store.find_sent(["s1@x.example"])
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        store.record_sent(sent("s2@x.example"))


def test_an_unreachable_server_is_a_store_error_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="connect") as info:
        PostgresStore(f"host=127.0.0.1 port={free_port()} user=postgres dbname=x", timeout=5)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert time.monotonic() - started < 5


def test_a_missing_database_is_a_store_error(postgres: PostgreSQL) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        PostgresStore(postgres.dsn("no_such_database"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"conninfo": "host=127.0.0.1 port"},
        {"conninfo": "nosuchkey=1"},
        {"conninfo": "not a = conninfo = string"},
        {"conninfo": None},
        {"conninfo": "host=127.0.0.1", "timeout": 0},
        {"conninfo": "host=127.0.0.1", "min_size": 3, "max_size": 2},
        {"conninfo": "host=127.0.0.1", "max_size": 0},
        {"conninfo": "host=127.0.0.1", "prune_chunk": 0},
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        PostgresStore(**kwargs)


def test_the_pool_holds_min_size_connections_and_at_most_max_size(postgres_dsn: str) -> None:
    with PostgresStore(postgres_dsn, min_size=2, max_size=2, timeout=0.5) as store:
        store.pool.wait(5)
        assert store.pool.get_stats()["pool_size"] == 2
        holding = threading.Barrier(3)
        release = threading.Event()

        def hold() -> None:
            with store.transaction() as tx:
                tx.mark_processed(threading.current_thread().name, T0)
                holding.wait()
                release.wait(10)

        threads = [threading.Thread(target=hold, name=f"t{n}") for n in range(2)]
        for t in threads:
            t.start()
        holding.wait()
        try:
            # Both connections are in transactions: a third caller waits `timeout`, then fails.
            with pytest.raises(StoreError, match="pool"):
                store.is_processed("t0")
        finally:
            release.set()
            for t in threads:
                t.join()
        assert store.is_processed("t0")
        assert store.is_processed("t1")
        assert store.pool.get_stats()["pool_size"] == 2


def test_a_hosts_pool_is_used_and_left_open(postgres_dsn: str) -> None:
    pool = psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True)
    try:
        with PostgresStore(pool=pool) as store:
            assert store.pool is pool
            store.record_sent(sent("s1@x.example"))
            with store.transaction() as tx:
                tx.mark_processed("k", T0)
            assert store.find_sent(["s1@x.example"])
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.autocommit is False  # the host's setting, given back
            row = conn.execute("SELECT count(*) FROM replytrack.processed").fetchone()
            assert row == (1,)
    finally:
        pool.close()
    with pytest.raises(ConfigError, match="closed"):
        PostgresStore(pool=pool)
    with pytest.raises(ConfigError, match="either"):
        PostgresStore(postgres_dsn, pool=pool)


def test_times_come_back_in_utc_whatever_the_session_time_zone(postgres_dsn: str) -> None:
    def new_york(conn: Any) -> None:
        conn.execute("SET TimeZone TO 'America/New_York'")
        conn.commit()

    pool = psycopg_pool.ConnectionPool(postgres_dsn, configure=new_york, open=True)
    try:
        with PostgresStore(pool=pool) as store:
            exact = dt.datetime(2026, 7, 1, 23, 59, 59, 999_999, tzinfo=UTC)
            store.record_sent(sent("s1@x.example", sent_at=exact))
            with store.transaction() as tx:
                tx.enqueue("ev-1", "crm_log", b"{}", exact)
            back = store.find_sent(["s1@x.example"])["s1@x.example"].sent_at
            assert back == exact
            assert back is not None
            assert back.tzinfo is UTC
            (entry,) = store.find_outbox("ev-1")
            assert entry.created_at == exact
            assert entry.created_at.tzinfo is UTC
    finally:
        pool.close()


def test_a_store_must_not_cross_a_fork(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("replytrack.store.postgres.os.getpid", lambda: -1)
    with pytest.raises(ConfigError, match="fork"):
        store.find_sent(["a@x.example"])
    with pytest.raises(ConfigError, match="fork"), store.transaction():
        pass


# --------------------------------------------------------------------------------------------
# Failures inside transactions; hostile values
# --------------------------------------------------------------------------------------------


def test_a_failed_statement_rolls_the_whole_transaction_back(
    store: PostgresStore, admin: Any
) -> None:
    with (  # noqa: PT012 (the block is the transaction under test)
        pytest.raises(StoreError, match="rolled the transaction back"),
        store.transaction() as tx,
    ):
        tx.mark_processed("k1", T0)
        admin.execute("DROP TABLE replytrack.cursors")
        with pytest.raises(StoreError, match="save a cursor") as info:
            tx.save_cursor("src", "c")
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
        with pytest.raises(StoreError):  # PostgreSQL aborted the transaction
            tx.mark_processed("k2", T0)
    assert not store.is_processed("k1")


def test_store_errors_name_what_failed(store: PostgresStore, admin: Any) -> None:
    admin.execute("DROP TABLE replytrack.message_ids")
    with pytest.raises(StoreError, match="look up sends") as info:
        store.find_sent(["a@x.example"])
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    assert "message_ids" in str(info.value)


def test_ids_and_keys_with_nul_are_kept_as_u_fffd(store: PostgresStore) -> None:
    """PostgreSQL text holds no NUL: hostile mail must not stop a poll."""
    hostile = "a\x00b@x.example"
    store.record_sent(sent("s1@x.example"))
    assert store.find_sent([hostile]) == {}
    assert not store.is_processed(hostile)
    with store.transaction() as tx:
        assert tx.mark_processed(hostile, T0)
        assert not tx.mark_processed(hostile, T0)
        tx.record_incoming(hostile, "s1@x.example")
        tx.enqueue("ev\x00", "crm_log", b"\x00", T0)
    assert store.is_processed(hostile)
    assert store.find_incoming([hostile])[hostile].message_id == "s1@x.example"
    assert store.find_outbox("ev\x00")[0].payload == b"\x00"  # bytes are bytes
    store.record_sent(sent(hostile, "ref\x00"))
    assert store.find_sent([hostile])[hostile].message_id == "a\ufffdb@x.example"


def test_quotes_and_backslashes_are_values_not_sql(store: PostgresStore) -> None:
    nasty = "x'); DROP TABLE replytrack.sends; --\\"
    store.record_sent(sent('"q\\uote\'s"@x.example', nasty, subject=nasty))
    assert store.find_sent_by_ref(nasty) is not None
    assert store.find_sent_by_subject(nasty, ["pat@prospect.example"])


def test_subject_hits_are_checked_on_the_send_when_hashes_collide(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subject index keeps 64-bit hashes; a collision must not match the wrong send."""
    monkeypatch.setattr(postgres_module, "_hash64", lambda text: 7)  # everything collides
    for i in range(30):  # newer sends with another subject crowd the first page
        subject = "Quick question" if i < 5 else f"Other {i}"
        store.record_sent(sent(f"s{i}@x.example", subject=subject, sent_at=T0 + dt.timedelta(i)))
    found = store.find_sent_by_subject("Re: quick question", ["pat@prospect.example"], limit=3)
    assert [s.message_id for s in found] == ["s4@x.example", "s3@x.example", "s2@x.example"]
    assert store.find_sent_by_subject("Quick question", ["nobody@else.example"]) == []


# --------------------------------------------------------------------------------------------
# Indexes for every lookup
# --------------------------------------------------------------------------------------------


def plan(admin: Any, query: bytes, params: Any) -> str:
    """The plan of `query` with `params`."""
    cur = admin.cursor()
    cur.execute(b"EXPLAIN " + query, params)
    return "\n".join(row[0] for row in cur.fetchall())


def test_every_lookup_uses_an_index(store: PostgresStore, admin: Any) -> None:
    with store.transaction() as tx:
        for i in range(3000):
            tx.record_sent(
                sent(
                    f"s{i}@x.example",
                    f"ref-{i % 500}",
                    provider_thread_id=f"thr-{i % 700}" if i % 2 else None,
                    thread_index=i.to_bytes(16, "big"),
                    subject=f"Quick question {i % 300}",
                    sent_at=T0 + dt.timedelta(minutes=i),
                )
            )
            tx.record_incoming(f"reply-{i}@p.example", f"s{i}@x.example")
            tx.mark_processed(f"key-{i}", T0)
            entry = tx.enqueue(f"ev-{i}", "crm_log", b"{}", T0 + dt.timedelta(seconds=i))
            assert entry is not None
            if i % 3 == 0:
                tx.mark_delivered(entry, T0)
            elif i % 3 == 1:
                tx.mark_dead(entry, "x", T0)
            tx.save_cursor(f"src-{i}", "c")
    admin.execute("ANALYZE")
    q = store._q
    h = postgres_module._hash64
    cases: dict[str, tuple[bytes, Any]] = {
        "find_sent": (q.find_sent, (["s1@x.example", "s2@x.example"],)),
        "find_incoming": (q.find_incoming, (["reply-3@p.example"],)),
        "by_ref": (q.by_ref, ("ref-3",)),
        "by_thread": (q.by_provider_thread, ("thr-3",)),
        "by_guid": (q.by_thread_index, ((7).to_bytes(16, "big"),)),
        "by_subject": (
            q.by_subject,
            {"subject": h("x"), "parties": [h("a"), h("b")], "limit": 20},
        ),
        "by_subject_since": (
            q.by_subject_since,
            {"subject": h("x"), "parties": [h("a")], "limit": 20, "since": T0},
        ),
        "processed": (q.is_processed, ("k",)),
        "due": (q.due_outbox, (T0, 5)),
        "dead": (q.dead_outbox, (5,)),
        "outbox": (q.find_outbox, ("ev-3",)),
        "cursor": (q.load_cursor, ("src-3",)),
        "send_of": (q.send_of, ("s1@x.example",)),
    }
    for name, (query, params) in cases.items():
        text = plan(admin, query, params)
        assert "Seq Scan" not in text, (name, text)
        # Sorting is only fine when it is bounded: the entries of one event (one per hook),
        # and the parties x limit candidates of the subject lookup.
        if name not in ("outbox", "by_subject", "by_subject_since"):
            assert "Sort" not in text, (name, text)
    # The writes that look rows up find them through indexes too.
    writes: dict[str, tuple[bytes, Any]] = {
        "claim_outbox": (q.claim_outbox, {"now": T0, "until": T0 + LEASE, "limit": 10}),
        "prune_ledger": (q.prune_ledger, (T0, 10)),
        "prune_outbox": (q.prune_outbox, (T0, 10)),
        "mark_delivered": (q.mark_delivered, (T0, 5)),
    }
    for name, (query, params) in writes.items():
        text = plan(admin, query, params)
        assert "Seq Scan" not in text, (name, text)
