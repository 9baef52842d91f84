"""The embedded default store: one SQLite file, standard library `sqlite3` only.

Rule 1: the file is in WAL mode, so readers never wait for the writer and the writer never
        waits for readers. Every write transaction starts with ``BEGIN IMMEDIATE``: it takes
        the write lock first, so two writers queue (up to ``timeout``, SQLite's busy timeout)
        instead of deadlocking halfway through (the classic DEFERRED upgrade failure).
Rule 2: several processes on one machine may open the same file, each with its own
        `SQLiteStore`; a store must not cross a ``fork()`` (SQLite's own rule, "How To
        Corrupt An SQLite Database File", §2.6): the child opens its own.
Rule 3: threads share a store. Each call (or transaction) borrows a connection from a small
        pool and gives it back; a thread with an open transaction reads through the
        transaction's connection, so it sees its own writes. ``":memory:"`` has one
        connection (each connection would be a different database), shared under a lock.
Rule 4: memory stays bounded whatever the table sizes: no query loads a table, long id lists
        are looked up in chunks well under SQLite's bound-variable limit (999 before 3.32),
        and the subject lookup merges index-ordered cursors instead of sorting candidates.
Rule 5: the schema carries its version in ``schema_migrations``; opening a file applies the
        missing forward `Migration`s in one ``BEGIN IMMEDIATE`` transaction (so processes
        opening a new file at once migrate it once), and a file newer than the code is
        refused with `StoreError` rather than misread.
Rule 6: times are INTEGER microseconds since the Unix epoch, UTC (exact round trips, correct
        ordering, compact indexes); a send without ``sent_at`` is stored as the smallest
        64-bit integer, so "newest first" is a plain descending index walk.
Rule 7: every `sqlite3.Error` becomes `StoreError`, with the original as ``__cause__``.

Durability: ``synchronous=FULL`` by default: a committed transaction survives a power cut.
``"NORMAL"`` is faster (no fsync per commit in WAL mode) and never corrupts the file, but a
power cut may roll back the last commits; replytrack's at-least-once design tolerates that for
the ledger, outbox and cursor (they roll back together), not for sends recorded just before
mail went out.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import heapq
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from replytrack.errors import ConfigError, StoreError
from replytrack.headers import address_key
from replytrack.store.base import (
    BaseStore,
    Migration,
    OutboxEntry,
    OutboxState,
    Pruned,
    SentMessage,
    Transaction,
    address_keys,
    canonical_id,
    check_cursor,
    check_key,
    check_lease,
    check_limit,
    check_text,
    from_micros,
    group_lookup_ids,
    guid_bytes,
    iter_chunks,
    payload_bytes,
    stored_sent,
    subject_key,
    to_micros,
)

if TYPE_CHECKING:
    from types import TracebackType

    from replytrack.headers import Address

__all__ = ["Migration", "SQLiteStore"]

#: Ids per ``IN (...)`` query: under the 999 bound variables of SQLite before 3.32.
CHUNK: Final = 512
#: ``sent_at`` of a send recorded without one: older than any real time (module Rule 6).
NO_TIME: Final = -(2**63)


_V1 = Migration(
    1,
    "sends, message ids, subject index, incoming ties, ledger, outbox, cursors",
    (
        # One row per send; to/cc are JSON arrays of address strings.
        """CREATE TABLE sends (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL,
            ref TEXT NOT NULL,
            sender TEXT NOT NULL,
            to_addrs TEXT NOT NULL,
            cc_addrs TEXT NOT NULL,
            subject TEXT,
            sent_at INTEGER NOT NULL,
            provider_thread_id TEXT,
            thread_index BLOB
        )""",
        # (ref, sent_at) and friends: "the newest send with this ref" is one backward index
        # step, the rowid (recording order) breaking ties.
        "CREATE INDEX sends_ref ON sends (ref, sent_at)",
        """CREATE INDEX sends_provider_thread ON sends (provider_thread_id, sent_at)
           WHERE provider_thread_id IS NOT NULL""",
        """CREATE INDEX sends_thread_index ON sends (thread_index, sent_at)
           WHERE thread_index IS NOT NULL""",
        # Every id that names a send: its own (alias = 0) and its aliases. The primary key
        # is what makes one id name at most one send (base.py, Rule 2).
        """CREATE TABLE message_ids (
            message_id TEXT PRIMARY KEY,
            send_id INTEGER NOT NULL,
            alias INTEGER NOT NULL
        ) WITHOUT ROWID""",
        # The subject heuristic's index: one row per (subject, party) of a send, as 64-bit
        # hashes so that it stays small at a million sends; hits are checked on the send.
        """CREATE TABLE subject_index (
            subject_hash INTEGER NOT NULL,
            address_hash INTEGER NOT NULL,
            sent_at INTEGER NOT NULL,
            send_id INTEGER NOT NULL,
            PRIMARY KEY (subject_hash, address_hash, sent_at, send_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE incoming (
            message_id TEXT PRIMARY KEY,
            send_id INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE processed (
            key TEXT PRIMARY KEY,
            processed_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
        # AUTOINCREMENT: an entry id is never reused, even once old rows are pruned, so a
        # late mark_delivered() from a slow worker cannot hit a newer entry.
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL,
            hook TEXT NOT NULL,
            payload BLOB NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            next_attempt_at INTEGER,
            last_error TEXT,
            finished_at INTEGER,
            UNIQUE (event_id, hook)
        )""",
        "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending'",
        "CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead'",
        """CREATE TABLE cursors (
            source TEXT PRIMARY KEY,
            cursor TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
)

_V2 = Migration(
    2,
    "leases for work sharing; indexes for retention",
    (
        """CREATE TABLE leases (
            source TEXT PRIMARY KEY,
            worker TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX processed_at ON processed (processed_at)",
        "CREATE INDEX outbox_delivered ON outbox (finished_at) WHERE state = 'delivered'",
    ),
)

_V3 = Migration(
    3,
    "outbox payloads stored once per event, shared by its hooks' entries",
    (
        # An event goes to two hooks: its payload (a KB or two of JSON) was written twice, and
        # again by each delivery mark, which rewrites the whole row. Entries now point at one
        # payload row and stay small; entries written before keep theirs in outbox.payload.
        "CREATE TABLE outbox_payloads (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)",
        "ALTER TABLE outbox ADD COLUMN payload_id INTEGER",
        "CREATE INDEX outbox_payload ON outbox (payload_id) WHERE payload_id IS NOT NULL",
    ),
)

_SEND_COLUMNS: Final = (
    "s.id, s.message_id, s.ref, s.sender, s.to_addrs, s.cc_addrs, s.subject, s.sent_at,"
    " s.provider_thread_id, s.thread_index"
)
_OUTBOX_COLUMNS: Final = (
    "o.id, o.event_id, o.hook, COALESCE(p.payload, o.payload), o.state, o.attempts,"
    " o.created_at, o.next_attempt_at, o.last_error, o.finished_at"
)
# Entries with their payload: the shared row (schema 3), else the one kept in the entry.
_OUTBOX_FROM: Final = "outbox o LEFT JOIN outbox_payloads p ON p.id = o.payload_id"
_STATES: Final = {state.value: state for state in OutboxState}


class _translated:  # noqa: N801 - used as a function: `with _translated("read"):`
    """Turn `sqlite3.Error` into `StoreError` (module Rule 7).

    A class rather than a `contextlib.contextmanager`: it wraps every read, and a generator
    based context manager costs as much as a small indexed lookup.
    """

    __slots__ = ("action",)

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"SQLite could not {self.action}: {exc}") from exc


def _hash64(text: str) -> int:
    """A stable signed 64-bit hash (SQLite integers are signed 64-bit)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@functools.lru_cache(maxsize=32)
def _ids_query(table: str, count: int) -> str:
    """The lookup of `count` ids in `table` (``message_ids`` or ``incoming``), with its send."""
    return (
        f"SELECT t.message_id, {_SEND_COLUMNS} FROM {table} t"  # noqa: S608 (fixed names)
        f" JOIN sends s ON s.id = t.send_id WHERE t.message_id IN ({', '.join('?' * count)})"
    )


@functools.lru_cache(maxsize=16)
def _processed_query(count: int) -> str:
    """The ledger lookup of `count` keys."""
    return f"SELECT key FROM processed WHERE key IN ({', '.join('?' * count)})"  # noqa: S608


def _padded(chunk: list[str]) -> list[str | None]:
    """`chunk` padded with NULLs to a power of two, so few distinct statements get prepared.

    ``x IN (..., NULL)`` never matches through the NULL, and the statement cache of the
    connection then holds ten shapes of a lookup instead of one per list length.
    """
    size = 1
    while size < len(chunk):
        size *= 2
    return [*chunk, *([None] * (size - len(chunk)))]


def _sent_from_row(row: tuple[Any, ...]) -> SentMessage:
    """A `SentMessage` from the columns of `_SEND_COLUMNS` (the row id first)."""
    _, mid, ref, sender, to_addrs, cc_addrs, subject, sent_at, thread_id, guid = row
    return stored_sent(
        mid,
        ref,
        sender,
        tuple(json.loads(to_addrs)),
        tuple(json.loads(cc_addrs)),
        subject,
        None if sent_at == NO_TIME else from_micros(sent_at),
        thread_id,
        guid,
    )


def _entry_from_row(row: tuple[Any, ...]) -> OutboxEntry:
    entry_id, event_id, hook, payload, state, attempts, created, due, error, finished = row
    return OutboxEntry(
        entry_id=entry_id,
        event_id=event_id,
        hook=hook,
        payload=bytes(payload),
        state=_STATES[state],
        attempts=attempts,
        created_at=from_micros(created),
        next_attempt_at=None if due is None else from_micros(due),
        last_error=error,
        finished_at=None if finished is None else from_micros(finished),
    )


class _Pool:
    """Connections borrowed per call (module Rule 3); at most `max_size` exist at once."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, max_size: int | None, max_idle: int
    ) -> None:
        self._connect = connect
        self._max_size = max_size
        self._max_idle = max_idle
        self._cond = threading.Condition()
        self._idle: list[sqlite3.Connection] = []
        self._count = 0
        self._closed = False
        self._pid = os.getpid()

    def acquire(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:
            raise ConfigError(
                "an SQLiteStore must not cross fork(): open a new one in the child process"
            )
        with self._cond:
            while True:
                if self._closed:
                    raise ConfigError("SQLiteStore is closed")
                if self._idle:
                    return self._idle.pop()
                if self._max_size is None or self._count < self._max_size:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            with _translated("open the database"):
                return self._connect()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def release(self, conn: sqlite3.Connection) -> None:
        with self._cond:
            keep = not self._closed and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(conn)
            else:
                self._count -= 1
            self._cond.notify()
        if not keep:
            conn.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        # Connections borrowed right now are closed by release() when they come back.
        for conn in idle:
            conn.close()


class SQLiteStore(BaseStore):
    """A store in one SQLite file; see the module's rules.

    Args:
        path: the database file (created when missing), or ``":memory:"`` for a private
            in-memory database (tests).
        timeout: seconds to wait for another connection's lock before `StoreError`.
        synchronous: ``"FULL"`` (the default: commits survive a power cut) or ``"NORMAL"``
            (faster; see the module docstring).
        max_idle_connections: connections kept open between calls, for threads.

    Raises:
        StoreError: the file cannot be opened, is not an SQLite database, or has a newer
            schema than this version of replytrack.
        ConfigError: an argument is invalid.
    """

    #: The schema's forward steps, oldest first. A subclass may append its own.
    MIGRATIONS: ClassVar[tuple[Migration, ...]] = (_V1, _V2, _V3)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        max_idle_connections: int = 4,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ConfigError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
        self._check_migrations()
        self._path = os.fspath(path)
        self._memory = self._path == ":memory:"
        self._timeout = float(timeout)
        self._synchronous = synchronous
        self._local = threading.local()
        self._pool = _Pool(
            self._connect,
            max_size=1 if self._memory else None,
            max_idle=max(1, max_idle_connections),
        )
        try:
            conn = self._pool.acquire()
            try:
                with _translated(f"open {self._path!r} as an SQLite database"):
                    if not self._memory:
                        conn.execute("PRAGMA journal_mode=WAL")
                    self._migrate(conn)
            finally:
                self._pool.release(conn)
        except BaseException:
            self._closed = True
            self._pool.close()
            raise

    @property
    def path(self) -> str:
        """The database file, or ``":memory:"``."""
        return self._path

    @property
    def schema_version(self) -> int:
        """The schema version of the database (the newest applied `Migration`)."""
        with self._connection() as conn:
            return int(conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])

    def _close(self) -> None:
        self._pool.close()

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN; transactions are explicit (module Rule 1).
        # check_same_thread=False: the pool hands a connection to one thread at a time.
        conn = sqlite3.connect(
            self._path,
            timeout=self._timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one read: the open transaction's in this thread, else borrowed."""
        self._check_open()
        pinned: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if pinned is not None:
            with _translated("read"):
                yield pinned
            return
        conn = self._pool.acquire()
        try:
            with _translated("read"):
                yield conn
        finally:
            self._pool.release(conn)

    @classmethod
    def _check_migrations(cls) -> None:
        versions = [m.version for m in cls.MIGRATIONS]
        if versions != list(range(1, len(versions) + 1)):
            raise ConfigError(f"MIGRATIONS must be versions 1, 2, 3 ... in order: {versions}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        latest = self.MIGRATIONS[-1].version
        if self._current_version(conn) == latest:
            return  # the common case: no write lock taken at all
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, description TEXT NOT NULL)"
            )
            # Read again under the write lock: another process may have migrated meanwhile.
            current = self._current_version(conn)
            if current > latest:
                raise StoreError(
                    f"{self._path!r} has schema version {current}, newer than this replytrack"
                    f" understands ({latest}); upgrade replytrack"
                )
            for migration in self.MIGRATIONS[current:]:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES (?, ?)",
                    (migration.version, migration.description),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _current_version(conn: sqlite3.Connection) -> int:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if exists is None:
            return 0
        return int(
            conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        )

    # -- the unit of work --------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Open an atomic unit of writes; see `replytrack.store.Store.transaction`.

        Raises:
            ConfigError: the store is closed, or this thread has a transaction open already.
            StoreError: the write lock was not granted within ``timeout``, or the commit
                failed (then nothing was written).
        """
        self._check_open()
        if getattr(self._local, "conn", None) is not None:
            raise ConfigError("transactions do not nest; use the open transaction")
        conn = self._pool.acquire()
        tx = _SQLiteTransaction(conn)
        self._local.conn = conn
        try:
            with _translated("begin a write transaction"):
                conn.execute("BEGIN IMMEDIATE")
            try:
                with _translated("write"):
                    yield tx
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            with _translated("commit"):
                conn.execute("COMMIT")
        finally:
            tx.finished = True
            self._local.conn = None
            # A failed COMMIT may leave the transaction open: never pool it that way.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._pool.release(conn)

    # -- reads -------------------------------------------------------------------------------

    def _find_by_ids(self, table: str, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        grouped = group_lookup_ids(message_ids)
        found: dict[str, SentMessage] = {}
        if not grouped:
            return found
        by_row: dict[int, SentMessage] = {}  # one SentMessage per send, however many ids hit it
        with self._connection() as conn:
            for chunk in iter_chunks(list(grouped), CHUNK):
                args = _padded(chunk)
                rows = conn.execute(_ids_query(table, len(args)), args)
                for matched, *columns in rows:
                    sent = by_row.get(columns[0])
                    if sent is None:
                        sent = by_row[columns[0]] = _sent_from_row(tuple(columns))
                    found.update(dict.fromkeys(grouped[matched], sent))
        return found

    def find_sent(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `replytrack.store.Store.find_sent`."""
        return self._find_by_ids("message_ids", message_ids)

    def find_incoming(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `replytrack.store.Store.find_incoming`."""
        return self._find_by_ids("incoming", message_ids)

    def _newest(self, column: str, value: object) -> SentMessage | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_SEND_COLUMNS} FROM sends s WHERE s.{column} = ?"  # noqa: S608 (fixed names)
                " ORDER BY s.sent_at DESC, s.id DESC LIMIT 1",
                (value,),
            ).fetchone()
        return None if row is None else _sent_from_row(row)

    def find_sent_by_ref(self, ref: str) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_ref`."""
        return self._newest("ref", check_text(ref, "ref"))

    def find_sent_by_provider_thread(self, thread_id: str) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_provider_thread`."""
        return self._newest("provider_thread_id", check_text(thread_id, "thread_id"))

    def find_sent_by_thread_index(self, guid: bytes) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_thread_index`."""
        return self._newest("thread_index", guid_bytes(guid))

    def find_sent_by_subject(
        self,
        subject: str,
        addresses: Iterable[str | Address],
        since: _dt.datetime | None = None,
        *,
        limit: int = 20,
    ) -> list[SentMessage]:
        """See `replytrack.store.Store.find_sent_by_subject`."""
        key = subject_key(subject)
        parties = address_keys(addresses)
        check_limit(limit)
        floor = NO_TIME if since is None else to_micros(since, "since")
        if key is None or not parties:
            return []
        subject_hash = _hash64(key)
        found: list[SentMessage] = []
        with self._connection() as conn:
            # One index-ordered cursor per party, merged newest first (module Rule 4): memory
            # is bounded by the number of parties and `limit`, not by how many sends match.
            cursors = [
                conn.execute(
                    "SELECT sent_at, send_id FROM subject_index"
                    " WHERE subject_hash = ? AND address_hash = ? AND sent_at >= ?"
                    " ORDER BY sent_at DESC, send_id DESC",
                    (subject_hash, _hash64(party), floor),
                )
                for party in sorted(parties)
            ]
            seen: set[int] = set()
            for _, send_id in heapq.merge(*cursors, reverse=True):
                if send_id in seen:
                    continue
                seen.add(send_id)
                row = conn.execute(
                    f"SELECT {_SEND_COLUMNS} FROM sends s WHERE s.id = ?",  # noqa: S608 (fixed names)
                    (send_id,),
                ).fetchone()
                sent = _sent_from_row(row)
                # The index holds hashes: check the real subject and parties.
                if sent.subject_key == key and not parties.isdisjoint(
                    address_key(a) for a in sent.participants
                ):
                    found.append(sent)
                    if len(found) == limit:
                        break
            for cursor in cursors:
                cursor.close()
        return found

    def is_processed(self, key: str) -> bool:
        """See `replytrack.store.Store.is_processed`."""
        check_key(key, "key")
        with self._connection() as conn:
            row = conn.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone()
        return row is not None

    def find_processed(self, keys: Iterable[str]) -> set[str]:
        """See `replytrack.store.Store.find_processed`."""
        wanted = list(dict.fromkeys(check_key(key, "key") for key in keys))
        found: set[str] = set()
        with self._connection() as conn:
            for chunk in iter_chunks(wanted, CHUNK):
                padded = _padded(chunk)
                rows = conn.execute(
                    _processed_query(len(padded)),  # fixed text: placeholders only
                    padded,
                ).fetchall()
                found.update(row[0] for row in rows)
        return found

    def due_outbox(self, now: _dt.datetime, limit: int = 100) -> list[OutboxEntry]:
        """See `replytrack.store.Store.due_outbox`."""
        moment = to_micros(now, "now")
        check_limit(limit)
        # state = 'pending' spelled as a literal: that is what lets SQLite use the partial
        # index outbox_due.
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM {_OUTBOX_FROM}"  # noqa: S608 (fixed names)
                " WHERE o.state = 'pending' AND o.next_attempt_at <= ?"
                " ORDER BY o.next_attempt_at, o.id LIMIT ?",
                (moment, limit),
            ).fetchall()
        return [_entry_from_row(r) for r in rows]

    def dead_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """See `replytrack.store.Store.dead_outbox`."""
        check_limit(limit)
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM {_OUTBOX_FROM}"  # noqa: S608 (fixed names)
                " WHERE o.state = 'dead' ORDER BY o.id LIMIT ?",
                (limit,),
            ).fetchall()
        return [_entry_from_row(r) for r in rows]

    def find_outbox(self, event_id: str) -> list[OutboxEntry]:
        """See `replytrack.store.Store.find_outbox`."""
        check_key(event_id, "event_id")
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM {_OUTBOX_FROM}"  # noqa: S608 (fixed names)
                " WHERE o.event_id = ? ORDER BY o.id",
                (event_id,),
            ).fetchall()
        return [_entry_from_row(r) for r in rows]

    def load_cursor(self, source: str) -> str | None:
        """See `replytrack.store.Store.load_cursor`."""
        check_key(source, "source")
        with self._connection() as conn:
            row = conn.execute("SELECT cursor FROM cursors WHERE source = ?", (source,)).fetchone()
        return None if row is None else str(row[0])

    # -- work sharing and retention ------------------------------------------------------------

    def claim_outbox(
        self, now: _dt.datetime, until: _dt.datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """See `replytrack.store.Store.claim_outbox`.

        The select and the update run under SQLite's write lock (``BEGIN IMMEDIATE``), which
        every process sharing the file takes in turn: two claims never overlap.
        """
        moment, expiry = check_lease(now, until)
        check_limit(limit)
        with self.transaction() as tx:
            assert isinstance(tx, _SQLiteTransaction)  # noqa: S101 (our own transaction)
            db = tx._db()
            rows = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM {_OUTBOX_FROM}"  # noqa: S608 (fixed names)
                " WHERE o.state = 'pending' AND o.next_attempt_at <= ?"
                " ORDER BY o.next_attempt_at, o.id LIMIT ?",
                (to_micros(moment), limit),
            ).fetchall()
            db.executemany(
                "UPDATE outbox SET next_attempt_at = ? WHERE id = ?",
                [(to_micros(expiry), row[0]) for row in rows],
            )
        return [_entry_from_row(r) for r in rows]

    def claim_source(
        self, source: str, worker: str, now: _dt.datetime, until: _dt.datetime
    ) -> bool:
        """See `replytrack.store.Store.claim_source`."""
        check_key(source, "source")
        check_key(worker, "worker")
        moment, expiry = check_lease(now, until)
        with self.transaction() as tx:
            assert isinstance(tx, _SQLiteTransaction)  # noqa: S101 (our own transaction)
            cursor = tx._db().execute(
                "INSERT INTO leases (source, worker, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (source) DO UPDATE SET worker = excluded.worker,"
                " expires_at = excluded.expires_at"
                " WHERE leases.worker = excluded.worker OR leases.expires_at <= ?",
                (source, worker, to_micros(expiry), to_micros(moment)),
            )
            return cursor.rowcount == 1

    def release_source(self, source: str, worker: str) -> None:
        """See `replytrack.store.Store.release_source`."""
        check_key(source, "source")
        check_key(worker, "worker")
        with self.transaction() as tx:
            assert isinstance(tx, _SQLiteTransaction)  # noqa: S101 (our own transaction)
            tx._db().execute(
                "DELETE FROM leases WHERE source = ? AND worker = ?", (source, worker)
            )

    def prune(self, before: _dt.datetime) -> Pruned:
        """See `replytrack.store.Store.prune`.

        Deletes in chunks of `CHUNK` rows, one short transaction each, so that workers
        writing meanwhile wait for the write lock only briefly.
        """
        cutoff = to_micros(before, "before")
        return Pruned(
            ledger=self._in_chunks(_prune_ledger, cutoff),
            outbox=self._in_chunks(_prune_outbox, cutoff),
        )

    def _in_chunks(self, step: Callable[[sqlite3.Connection, int], int], cutoff: int) -> int:
        """Run `step` (it deletes at most `CHUNK` rows) until it deletes fewer; the total."""
        total = 0
        while True:
            with self.transaction() as tx:
                assert isinstance(tx, _SQLiteTransaction)  # noqa: S101 (our own)
                deleted = step(tx._db(), cutoff)
            total += deleted
            if deleted < CHUNK:
                return total


def _prune_ledger(db: sqlite3.Connection, cutoff: int) -> int:
    return int(
        db.execute(
            "DELETE FROM processed WHERE key IN (SELECT key FROM processed"
            " WHERE processed_at < ? LIMIT ?)",
            (cutoff, CHUNK),
        ).rowcount
    )


def _prune_outbox(db: sqlite3.Connection, cutoff: int) -> int:
    rows = db.execute(
        "SELECT id, payload_id FROM outbox WHERE state = 'delivered' AND finished_at < ? LIMIT ?",
        (cutoff, CHUNK),
    ).fetchall()
    db.executemany("DELETE FROM outbox WHERE id = ?", [(entry_id,) for entry_id, _ in rows])
    # A payload goes with the last entry pointing at it: the event's other hook may be pending.
    payloads = {payload_id for _, payload_id in rows if payload_id is not None}
    db.executemany(
        "DELETE FROM outbox_payloads WHERE id = ?"
        " AND NOT EXISTS (SELECT 1 FROM outbox WHERE payload_id = ?)",
        [(payload_id, payload_id) for payload_id in payloads],
    )
    return len(rows)


class _SQLiteTransaction:
    """The writes of one `SQLiteStore` transaction (see `replytrack.store.Transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.finished = False
        # The payload row last written by `enqueue`: (event id, payload, row id). The hooks
        # of an event are queued one after the other with the same payload, and share it.
        self._payload: tuple[str, bytes, int] | None = None

    def _db(self) -> sqlite3.Connection:
        if self.finished:
            raise ConfigError("the transaction is over; open a new one")
        return self._conn

    def _send_of(self, message_id: str) -> tuple[int, bool] | None:
        row = (
            self._db()
            .execute("SELECT send_id, alias FROM message_ids WHERE message_id = ?", (message_id,))
            .fetchone()
        )
        return None if row is None else (int(row[0]), bool(row[1]))

    def _index_subject(self, sent: SentMessage, send_id: int, *, add: bool) -> None:
        key = sent.subject_key
        if key is None:
            return
        subject_hash = _hash64(key)
        at = NO_TIME if sent.sent_at is None else to_micros(sent.sent_at)
        rows = [
            (subject_hash, _hash64(party), at, send_id)
            for party in {address_key(a) for a in sent.participants}
        ]
        if add:
            self._db().executemany(
                "INSERT OR IGNORE INTO subject_index"
                " (subject_hash, address_hash, sent_at, send_id) VALUES (?, ?, ?, ?)",
                rows,
            )
        else:
            self._db().executemany(
                "DELETE FROM subject_index WHERE subject_hash = ? AND address_hash = ?"
                " AND sent_at = ? AND send_id = ?",
                rows,
            )

    def record_sent(self, sent: SentMessage) -> None:
        """See `replytrack.store.Transaction.record_sent`."""
        db = self._db()
        if not isinstance(sent, SentMessage):
            raise ConfigError(f"record_sent() takes a SentMessage, not {type(sent).__name__}")
        mid = sent.message_id
        values = (
            mid,
            sent.ref,
            sent.sender,
            json.dumps(sent.to),
            json.dumps(sent.cc),
            sent.subject,
            NO_TIME if sent.sent_at is None else to_micros(sent.sent_at),
            sent.provider_thread_id,
            sent.thread_index,
        )
        known = self._send_of(mid)
        if known is not None and known[1]:
            raise ConfigError(f"{mid!r} is an alias of another send")
        if known is None:
            cursor = db.execute(
                "INSERT INTO sends (message_id, ref, sender, to_addrs, cc_addrs, subject,"
                " sent_at, provider_thread_id, thread_index)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            send_id = int(cursor.lastrowid or 0)
            db.execute(
                "INSERT INTO message_ids (message_id, send_id, alias) VALUES (?, ?, 0)",
                (mid, send_id),
            )
        else:
            send_id = known[0]
            old = db.execute(
                f"SELECT {_SEND_COLUMNS} FROM sends s WHERE s.id = ?",  # noqa: S608 (fixed names)
                (send_id,),
            ).fetchone()
            self._index_subject(_sent_from_row(old), send_id, add=False)
            db.execute(
                "UPDATE sends SET message_id = ?, ref = ?, sender = ?, to_addrs = ?,"
                " cc_addrs = ?, subject = ?, sent_at = ?, provider_thread_id = ?,"
                " thread_index = ? WHERE id = ?",
                (*values, send_id),
            )
        self._index_subject(sent, send_id, add=True)

    def record_alias(self, message_id: str, alias_id: str) -> None:
        """See `replytrack.store.Transaction.record_alias`."""
        db = self._db()
        target, alias = canonical_id(message_id), canonical_id(alias_id)
        known = self._send_of(target)
        if known is None:
            raise ConfigError(f"no send is recorded as {message_id!r}")
        taken = self._send_of(alias)
        if taken is not None and taken[0] == known[0]:
            return
        if taken is not None:
            raise ConfigError(f"{alias_id!r} already names another send")
        db.execute(
            "INSERT INTO message_ids (message_id, send_id, alias) VALUES (?, ?, 1)",
            (alias, known[0]),
        )

    def record_incoming(self, message_id: str, sent_message_id: str) -> None:
        """See `replytrack.store.Transaction.record_incoming`."""
        db = self._db()
        incoming, target = canonical_id(message_id), canonical_id(sent_message_id)
        # One statement in the common case (a new tie to a known send); the send is looked
        # up apart only when nothing was written, to tell "already tied" from "unknown".
        cursor = db.execute(
            "INSERT OR IGNORE INTO incoming (message_id, send_id)"
            " SELECT ?, send_id FROM message_ids WHERE message_id = ?",
            (incoming, target),
        )
        if cursor.rowcount == 0 and self._send_of(target) is None:
            raise ConfigError(f"no send is recorded as {sent_message_id!r}")

    def mark_processed(self, key: str, processed_at: _dt.datetime) -> bool:
        """See `replytrack.store.Transaction.mark_processed`."""
        db = self._db()
        check_key(key, "key")
        at = to_micros(processed_at, "processed_at")
        cursor = db.execute(
            "INSERT OR IGNORE INTO processed (key, processed_at) VALUES (?, ?)", (key, at)
        )
        return cursor.rowcount == 1

    def enqueue(
        self,
        event_id: str,
        hook: str,
        payload: bytes,
        now: _dt.datetime,
        *,
        due_at: _dt.datetime | None = None,
    ) -> int | None:
        """See `replytrack.store.Transaction.enqueue`."""
        db = self._db()
        check_key(event_id, "event_id")
        check_key(hook, "hook")
        body = payload_bytes(payload)
        moment = to_micros(now, "now")
        due = moment if due_at is None else to_micros(due_at, "due_at")
        shared = self._payload
        if shared is not None and shared[0] == event_id and shared[1] == body:
            payload_id, fresh = shared[2], False
        else:
            added = db.execute("INSERT INTO outbox_payloads (payload) VALUES (?)", (body,))
            payload_id, fresh = int(added.lastrowid or 0), True
        # A plain INSERT, its UNIQUE (event_id, hook) violation caught: SQLite undoes the
        # failed statement alone, AUTOINCREMENT value included. INSERT OR IGNORE would
        # consume a value per duplicate (entry ids should not jump), and a NOT EXISTS guard
        # reading the table it writes costs SQLite a temporary copy of the row: half again
        # the time of the insert. Every other constraint of the row holds by construction.
        try:
            cursor = db.execute(
                "INSERT INTO outbox (event_id, hook, payload, payload_id, state, attempts,"
                " created_at, next_attempt_at) VALUES (?, ?, x'', ?, 'pending', 0, ?, ?)",
                (event_id, hook, payload_id, moment, due),
            )
        except sqlite3.IntegrityError:
            if fresh:  # this hook's entry exists already, with its own payload
                db.execute("DELETE FROM outbox_payloads WHERE id = ?", (payload_id,))
            return None
        if fresh:
            self._payload = (event_id, body, payload_id)
        return int(cursor.lastrowid or 0)

    def _require_entry(self, entry_id: int) -> str:
        row = self._db().execute("SELECT state FROM outbox WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no outbox entry {entry_id!r}")
        return str(row[0])

    def mark_delivered(self, entry_id: int, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_delivered`."""
        moment = to_micros(now, "now")
        cursor = self._db().execute(
            "UPDATE outbox SET state = 'delivered', next_attempt_at = NULL,"
            " finished_at = ? WHERE id = ? AND state != 'delivered'",
            (moment, entry_id),
        )
        if cursor.rowcount == 0:
            self._require_entry(entry_id)  # delivered already, or no such entry

    def mark_failed(self, entry_id: int, error: str, retry_at: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_failed`."""
        when = to_micros(retry_at, "retry_at")
        message = _error_text(error)
        if self._require_entry(entry_id) == OutboxState.PENDING.value:
            self._db().execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ? WHERE id = ?",
                (when, message, entry_id),
            )

    def mark_dead(self, entry_id: int, error: str, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_dead`."""
        moment = to_micros(now, "now")
        message = _error_text(error)
        if self._require_entry(entry_id) == OutboxState.PENDING.value:
            self._db().execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1,"
                " next_attempt_at = NULL, last_error = ?, finished_at = ? WHERE id = ?",
                (message, moment, entry_id),
            )

    def save_cursor(self, source: str, cursor: str) -> None:
        """See `replytrack.store.Transaction.save_cursor`."""
        self._db().execute(
            "INSERT OR REPLACE INTO cursors (source, cursor) VALUES (?, ?)",
            (check_key(source, "source"), check_cursor(cursor)),
        )


def _error_text(error: str) -> str:
    if not isinstance(error, str):
        raise ConfigError(f"error must be a str, not {type(error).__name__}")
    return error
