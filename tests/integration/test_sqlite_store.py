"""SQLiteStore on real files: WAL, migrations, several processes, broken files, big lookups.

The behaviour every store shares is in ``tests/unit/test_store_contract.py``; this file holds
what only the SQLite backend has.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from replytrack.errors import ConfigError, StoreError
from replytrack.store import Migration, SentMessage, SQLiteStore
from replytrack.store import sqlite as sqlite_module
from replytrack.store.base import to_micros

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def sent(mid: str, ref: str = "c1:p1", **kwargs: object) -> SentMessage:
    kwargs.setdefault("subject", "Quick question")
    kwargs.setdefault("sent_at", T0)
    return SentMessage(mid, ref, "rep@vendor.example", ("pat@prospect.example",), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "replytrack.db"


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --------------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------------


def test_the_file_is_in_wal_mode(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert store.path == str(db)
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_reopening_a_file_keeps_everything(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.record_sent(sent("s1@x.example", thread_index=bytes(16)))
        store.record_alias("s1@x.example", "alias@x.example")
        store.record_incoming("reply@p.example", "s1@x.example")
        with store.transaction() as tx:
            tx.mark_processed("reply@p.example", T0)
            tx.enqueue("ev-1", "crm_log", b"{}", T0)
            tx.save_cursor("src", "c:1")
    with SQLiteStore(db) as store:
        assert store.find_sent(["alias@x.example"])["alias@x.example"] == sent(
            "s1@x.example", thread_index=bytes(16)
        )
        assert store.find_incoming(["reply@p.example"])
        assert store.is_processed("reply@p.example")
        assert [e.event_id for e in store.due_outbox(T0)] == ["ev-1"]
        assert store.load_cursor("src") == "c:1"
        assert store.find_sent_by_subject("re: quick question", ["pat@prospect.example"])


def test_a_path_like_and_a_str_path_are_the_same_file(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.record_sent(sent("s1@x.example"))
    with SQLiteStore(str(db)) as store:
        assert store.find_sent(["s1@x.example"])


def test_a_file_that_is_not_a_database_is_a_store_error(db: Path) -> None:
    db.write_bytes(b"this is not an SQLite database, just some text\n" * 100)
    with pytest.raises(StoreError, match="not a database") as info:
        SQLiteStore(db)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_corrupted_page_is_a_store_error(db: Path) -> None:
    with SQLiteStore(db, synchronous="NORMAL") as store:
        for i in range(300):
            store.record_sent(sent(f"s{i}@x.example", subject=f"subject {i}" * 20))
    data = bytearray(db.read_bytes())
    # Keep the 100-byte header and the first page's schema; wreck every page after it.
    page_size = int.from_bytes(data[16:18], "big")
    for offset in range(page_size * 2, len(data), page_size):
        data[offset : offset + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))

    def open_and_read() -> None:
        # Opening may notice already (the schema page survives); reading must.
        with SQLiteStore(db) as store:
            store.find_sent([f"s{i}@x.example" for i in range(300)])
            store.find_sent_by_subject("subject 7" * 20, ["pat@prospect.example"])

    with pytest.raises(StoreError):
        open_and_read()


def test_a_directory_that_does_not_exist_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unable to open"):
        SQLiteStore(tmp_path / "missing" / "store.db")


def test_bad_arguments_are_config_errors(db: Path) -> None:
    with pytest.raises(ConfigError):
        SQLiteStore(db, synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SQLiteStore(db, timeout=-1)


def test_memory_databases_are_private_to_their_store() -> None:
    with SQLiteStore(":memory:") as one, SQLiteStore(":memory:") as two:
        one.record_sent(sent("s1@x.example"))
        assert two.find_sent(["s1@x.example"]) == {}


# --------------------------------------------------------------------------------------------
# Locks and several processes
# --------------------------------------------------------------------------------------------


def test_a_write_lock_held_too_long_is_a_store_error_and_reads_go_on(db: Path) -> None:
    with SQLiteStore(db, timeout=0.2) as store:
        store.record_sent(sent("s1@x.example"))
        blocker = raw(db)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match="locked") as info:
                store.record_sent(sent("s2@x.example"))
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            # WAL: readers do not wait for the writer.
            assert store.find_sent(["s1@x.example"])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.record_sent(sent("s2@x.example"))
        assert store.find_sent(["s2@x.example"])


WORKER = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from replytrack.store import SentMessage, SQLiteStore

    path, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    fresh = 0
    with SQLiteStore(path, synchronous="NORMAL") as store:
        for i in range(rounds):
            with store.transaction() as tx:
                tx.record_sent(SentMessage(f"{name}-{i}@x.example", name, "rep@x.example", ()))
                fresh += tx.mark_processed(f"shared-{i}", t0)
                tx.enqueue(f"ev-{i}", "crm_log", name.encode(), t0)
                tx.save_cursor("shared-source", f"{name}:{i}")
            store.find_sent([f"{name}-{i}@x.example"])
    print(json.dumps({"fresh": fresh}))
    """
)


def run_workers(db: Path, names: list[str], rounds: int) -> list[dict[str, int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), name, str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_processes_writing_at_once_lose_nothing_and_duplicate_nothing(db: Path) -> None:
    """Three processes race on a fresh file: one migration, every write kept once."""
    rounds = 60
    results = run_workers(db, ["a", "b", "c"], rounds)
    # Each shared ledger key was new for exactly one process.
    assert sum(r["fresh"] for r in results) == rounds
    with SQLiteStore(db) as store:
        assert store.schema_version == LATEST
        for name in "abc":
            ids = [f"{name}-{i}@x.example" for i in range(rounds)]
            assert len(store.find_sent(ids)) == rounds
        due = store.due_outbox(T0 + dt.timedelta(days=1), limit=1000)
        assert sorted(e.event_id for e in due) == sorted(f"ev-{i}" for i in range(rounds))
        assert store.load_cursor("shared-source") in {f"{n}:{rounds - 1}" for n in "abc"}
    conn = raw(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == LATEST
    finally:
        conn.close()


def test_a_store_must_not_cross_a_fork(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteStore(db) as store:
        # What the child of a fork() would see: a different pid than the pool's.
        monkeypatch.setattr("replytrack.store.sqlite.os.getpid", lambda: -1)
        with pytest.raises(ConfigError, match="fork"):
            store.find_sent(["a@x.example"])
        monkeypatch.undo()


# --------------------------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------------------------


#: The schema version this replytrack writes; the tests add a step after it.
LATEST = SQLiteStore.MIGRATIONS[-1].version

NEXT = Migration(
    LATEST + 1,
    "a campaign column on sends, and a notes table",
    (
        "ALTER TABLE sends ADD COLUMN campaign TEXT",
        "UPDATE sends SET campaign = substr(ref, 1, instr(ref, ':') - 1)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    ),
)


class StoreNext(SQLiteStore):
    MIGRATIONS: ClassVar[tuple[Migration, ...]] = (*SQLiteStore.MIGRATIONS, NEXT)


class StoreV1(SQLiteStore):
    """A file of replytrack 0.1's first schema (its rows written with `old_entry` and SQL)."""

    MIGRATIONS: ClassVar[tuple[Migration, ...]] = SQLiteStore.MIGRATIONS[:1]


class StoreV2(SQLiteStore):
    """A file of the second schema: outbox payloads kept in each entry's row."""

    MIGRATIONS: ClassVar[tuple[Migration, ...]] = SQLiteStore.MIGRATIONS[:2]


def old_entry(db: Path, event_id: str, hook: str, payload: bytes) -> None:
    """A pending outbox entry as schemas 1 and 2 wrote it: the payload in its own row."""
    at = to_micros(T0)
    conn = raw(db)
    try:
        conn.execute(
            "INSERT INTO outbox (event_id, hook, payload, state, attempts, created_at,"
            " next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)",
            (event_id, hook, payload, at, at),
        )
    finally:
        conn.close()


def payload_rows(db: Path) -> int:
    conn = raw(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox_payloads").fetchone()[0])
    finally:
        conn.close()


def test_a_new_file_gets_the_current_schema(db: Path) -> None:
    with SQLiteStore(db) as store:
        assert store.schema_version == LATEST


def test_opening_migrates_forward_and_keeps_the_data(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.record_sent(sent("s1@x.example", "c42:p7"))
    with StoreNext(db) as store:
        assert store.schema_version == LATEST + 1
        assert store.find_sent(["s1@x.example"])
    conn = raw(db)
    try:
        assert conn.execute("SELECT campaign FROM sends").fetchall() == [("c42",)]
        assert conn.execute("SELECT version, description FROM schema_migrations").fetchall() == [
            *((m.version, m.description) for m in SQLiteStore.MIGRATIONS),
            (NEXT.version, NEXT.description),
        ]
    finally:
        conn.close()
    # Opening again migrates nothing.
    with StoreNext(db) as store:
        assert store.schema_version == LATEST + 1


def test_a_first_schema_file_gains_leases_and_keeps_its_outbox(db: Path) -> None:
    with StoreV1(db) as store:
        store.record_sent(sent("s1@x.example"))
        with store.transaction() as tx:
            tx.mark_processed("k1", T0)
    old_entry(db, "ev-1", "crm_log", b"{}")
    with SQLiteStore(db) as store:
        assert store.schema_version == LATEST
        assert store.is_processed("k1")
        (entry,) = store.claim_outbox(T0, T0 + dt.timedelta(minutes=5))
        assert entry.event_id == "ev-1"
        assert store.claim_source("inbox", "w1", T0, T0 + dt.timedelta(minutes=5))
        assert store.prune(T0 + dt.timedelta(seconds=1)).ledger == 1


def test_a_second_schema_file_keeps_the_payloads_of_its_entries(db: Path) -> None:
    with StoreV2(db):
        pass
    old_entry(db, "ev-1", "campaign_stop", b'{"old": 1}')
    old_entry(db, "ev-1", "crm_log", b'{"old": 1}')
    with SQLiteStore(db) as store:
        assert store.schema_version == LATEST
        assert [e.payload for e in store.find_outbox("ev-1")] == [b'{"old": 1}'] * 2
        (first, second) = store.claim_outbox(T0, T0 + dt.timedelta(minutes=5))
        assert first.payload == second.payload == b'{"old": 1}'
        with store.transaction() as tx:
            tx.enqueue("ev-2", "crm_log", b'{"new": 2}', T0)
            tx.mark_delivered(first.entry_id, T0)
            tx.mark_delivered(second.entry_id, T0)
        assert store.prune(T0 + dt.timedelta(seconds=1)).outbox == 2
        assert [e.payload for e in store.find_outbox("ev-2")] == [b'{"new": 2}']
    assert payload_rows(db) == 1


def test_the_entries_of_one_event_share_one_payload_row(db: Path) -> None:
    with SQLiteStore(db) as store:
        with store.transaction() as tx:
            stop = tx.enqueue("ev-1", "campaign_stop", b'{"x": 1}', T0)
            crm = tx.enqueue("ev-1", "crm_log", b'{"x": 1}', T0)
            assert tx.enqueue("ev-1", "crm_log", b'{"x": 1}', T0) is None
            tx.enqueue("ev-2", "crm_log", b'{"y": 2}', T0)
        assert stop is not None
        assert crm is not None
        assert payload_rows(db) == 2
        with store.transaction() as tx:  # a duplicate in a later transaction leaves no row
            assert tx.enqueue("ev-1", "campaign_stop", b'{"x": 1}', T0) is None
        assert payload_rows(db) == 2
        assert [e.payload for e in store.find_outbox("ev-1")] == [b'{"x": 1}'] * 2

        # The payload goes with the last entry that points at it.
        later = T0 + dt.timedelta(seconds=1)
        with store.transaction() as tx:
            tx.mark_delivered(stop, T0)
        assert store.prune(later).outbox == 1
        assert payload_rows(db) == 2
        assert [e.payload for e in store.find_outbox("ev-1")] == [b'{"x": 1}']
        with store.transaction() as tx:
            tx.mark_delivered(crm, T0)
        assert store.prune(later).outbox == 1
        assert payload_rows(db) == 1
        assert [e.payload for e in store.find_outbox("ev-2")] == [b'{"y": 2}']


def test_a_file_newer_than_the_code_is_refused(db: Path) -> None:
    with StoreNext(db):
        pass
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(db)


def test_a_failing_migration_changes_nothing(db: Path) -> None:
    class Broken(SQLiteStore):
        MIGRATIONS: ClassVar[tuple[Migration, ...]] = (
            *SQLiteStore.MIGRATIONS,
            Migration(LATEST + 1, "half done", ("CREATE TABLE half (x)", "THIS IS NOT SQL")),
        )

    with SQLiteStore(db) as store:
        store.record_sent(sent("s1@x.example"))
    with pytest.raises(StoreError, match="syntax error"):
        Broken(db)
    with SQLiteStore(db) as store:
        assert store.schema_version == LATEST
        assert store.find_sent(["s1@x.example"])
    conn = raw(db)
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchall() == []
    finally:
        conn.close()


def test_migrations_must_be_numbered_from_one_without_gaps(db: Path) -> None:
    class Gap(SQLiteStore):
        MIGRATIONS: ClassVar[tuple[Migration, ...]] = (
            *SQLiteStore.MIGRATIONS,
            Migration(LATEST + 2, "skips one", ()),
        )

    with pytest.raises(ConfigError, match="1, 2, 3"):
        Gap(db)
    assert not db.exists()


# --------------------------------------------------------------------------------------------
# Indexes for every lookup; bounded work
# --------------------------------------------------------------------------------------------


class TracingStore(SQLiteStore):
    """Records the statements its connections run, with their bound values."""

    statements: ClassVar[list[str]] = []

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.set_trace_callback(self.statements.append)
        return conn


@pytest.fixture
def tracing(db: Path) -> Iterator[TracingStore]:
    with TracingStore(db) as store:
        for i in range(50):
            store.record_sent(
                sent(
                    f"s{i}@x.example",
                    f"ref-{i % 7}",
                    provider_thread_id=f"thr-{i % 5}",
                    thread_index=bytes([i % 3]) * 16,
                    sent_at=T0 + dt.timedelta(minutes=i),
                )
            )
            store.record_alias(f"s{i}@x.example", f"alias-{i}@x.example")
            store.record_incoming(f"reply-{i}@p.example", f"s{i}@x.example")
        with store.transaction() as tx:
            for i in range(50):
                entry = tx.enqueue(f"ev-{i}", "crm_log", b"{}", T0)
                assert entry is not None
                if i % 2:
                    tx.mark_dead(entry, "x", T0)
        conn = raw(db)
        try:
            conn.execute("ANALYZE")  # real files get statistics over time; plans must hold
        finally:
            conn.close()
        yield store


def test_every_lookup_uses_an_index_and_sorts_nothing(tracing: TracingStore) -> None:
    lookups: dict[str, Callable[[TracingStore], object]] = {
        "find_sent": lambda s: s.find_sent(["s1@x.example", "alias-2@x.example"]),
        "find_incoming": lambda s: s.find_incoming(["reply-3@p.example"]),
        "by_ref": lambda s: s.find_sent_by_ref("ref-3"),
        "by_thread": lambda s: s.find_sent_by_provider_thread("thr-2"),
        "by_guid": lambda s: s.find_sent_by_thread_index(bytes([1]) * 16),
        "by_subject": lambda s: s.find_sent_by_subject(
            "quick question", ["pat@prospect.example", "rep@vendor.example"], T0
        ),
        "processed": lambda s: s.is_processed("k"),
        "due": lambda s: s.due_outbox(T0, limit=5),
        "dead": lambda s: s.dead_outbox(limit=5),
        "outbox": lambda s: s.find_outbox("ev-3"),
        "cursor": lambda s: s.load_cursor("src"),
    }
    conn = raw(Path(tracing.path))
    try:
        for name, lookup in lookups.items():
            TracingStore.statements.clear()
            lookup(tracing)
            selects = [s for s in TracingStore.statements if s.lstrip().startswith("SELECT")]
            assert selects, name
            for statement in selects:
                plan = " | ".join(
                    row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")
                )
                # find_outbox sorts the entries of one event: one per hook, a handful.
                if name != "outbox":
                    assert "TEMP B-TREE" not in plan, (name, statement, plan)
                # A SCAN is only fine over a partial index (the dead outbox entries).
                for step in plan.split(" | "):
                    if step.startswith("SCAN"):
                        assert "outbox_dead" in step, (name, statement, plan)
    finally:
        conn.close()


def test_find_sent_chunks_a_huge_id_list(db: Path) -> None:
    with SQLiteStore(db) as store:
        wanted = [f"s{i}@x.example" for i in (0, 31_999, 99_999)]
        for mid in wanted:
            store.record_sent(sent(mid))
        ids = [f"s{i}@x.example" for i in range(100_000)]
        assert sorted(store.find_sent(ids)) == sorted(wanted)


def test_chunks_are_padded_to_a_few_statement_shapes() -> None:
    shapes = {len(sqlite_module._padded(["x"] * n)) for n in range(1, sqlite_module.CHUNK + 1)}
    assert shapes == {2**k for k in range(10)}


def test_the_subject_lookup_does_not_load_every_candidate(db: Path) -> None:
    """Thousands of sends share a subject and a party (the rep): memory stays small."""
    with SQLiteStore(db, synchronous="NORMAL") as store:
        with store.transaction() as tx:
            for i in range(5000):
                tx.record_sent(sent(f"s{i}@x.example", sent_at=T0 + dt.timedelta(seconds=i)))
        tracemalloc.start()
        try:
            found = store.find_sent_by_subject("quick question", ["rep@vendor.example"], limit=3)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert [s.message_id for s in found] == [f"s{i}@x.example" for i in (4999, 4998, 4997)]
    assert peak < 256 * 1024, peak


def test_times_are_stored_as_utc_microseconds(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.record_sent(sent("s1@x.example", sent_at=dt.datetime(1970, 1, 1, 0, 0, 1, 5, UTC)))
        store.record_sent(sent("s2@x.example", sent_at=None))
    conn = raw(db)
    try:
        rows = dict(conn.execute("SELECT message_id, sent_at FROM sends").fetchall())
    finally:
        conn.close()
    assert rows == {"s1@x.example": 1_000_005, "s2@x.example": sqlite_module.NO_TIME}


def test_store_errors_name_what_failed(db: Path) -> None:
    with SQLiteStore(db) as store:
        conn = raw(db)
        try:
            conn.execute("DROP TABLE cursors")
        finally:
            conn.close()
        with pytest.raises(StoreError, match=re.escape("no such table: cursors")):
            store.load_cursor("src")
        with pytest.raises(StoreError, match="could not write"):
            store.save_cursor("src", "c")
