"""The store for fleets of workers: PostgreSQL, through psycopg 3 and its connection pool.

Install with ``pip install 'replytrack[postgres]'``. Every worker process (on any machine)
opens its own `PostgresStore` on the same database; they share the sends, the ledger, the
outbox, the cursors and the source leases (`replytrack.store.base`, Rule 7).

Rule 1: everything lives in one schema (``replytrack`` by default): the tables, their indexes,
        a sequence and ``schema_migrations``. The schema's name is checked (a plain lower-case
        identifier) and is the only name put into SQL text, quoted as an identifier
        (`psycopg.sql.Identifier`); every value is a bound parameter.
Rule 2: the schema carries its version in ``schema_migrations``. Opening applies the missing
        forward `Migration` steps in one transaction that first takes a transaction-scoped
        advisory lock of the schema (``pg_advisory_xact_lock``) and then reads the version
        again, so workers starting at once migrate it once and the others wait, then find it
        done. A schema newer than the code is refused with `StoreError` rather than misread.
Rule 3: threads share a store. Each call borrows a connection from the pool, in autocommit
        mode (a lookup is one round trip: no ``BEGIN``/``COMMIT``); a transaction holds one
        connection for its whole block, and the thread that opened it reads through it, so it
        sees its own writes. Connections from a host's own pool are switched to autocommit
        while borrowed and switched back. A store must not cross ``fork()``: the child opens
        its own.
Rule 4: transactions run at READ COMMITTED, and each write that can race with another worker
        settles the race in one statement: ``INSERT ... ON CONFLICT`` for ids, incoming ties,
        ledger keys, outbox entries, cursors and leases; ``FOR UPDATE SKIP LOCKED`` for outbox
        claims. No write fails because another worker wrote the same row at the same time (it
        waits for that worker's transaction, then keeps the first, as base Rule 5 says), and a
        write refused with `ConfigError` has written nothing.
Rule 5: times are ``timestamptz`` (microseconds, exactly as Python keeps them) and come back in
        UTC; a send without ``sent_at`` holds NULL. "Newest first" (base Rule 3) is ``ORDER BY
        sent_at DESC NULLS LAST, id DESC``, and each lookup that orders so walks an index
        built in that order: no lookup sorts or scans a table. ``text`` cannot hold NUL, which
        hostile mail puts in Message-IDs: every text value is written and looked up with NUL
        replaced by U+FFFD, so such a message is deduplicated and tied like any other (and a
        send recorded with a NUL comes back with U+FFFD in its place).
Rule 6: every psycopg error, a pool timeout included, becomes `StoreError` with the original as
        ``__cause__``. A connection found broken (a restarted server, a killed backend) is
        dropped and the pool's idle connections are checked at once; a lookup, and the
        ``BEGIN`` of a transaction, that met a broken connection are retried on another,
        since they wrote nothing - up to one more time than the pool holds connections: a
        restarted server leaves every one of them dead, and the pool's check can race with
        its own refills. A write that failed is not retried: its caller gets `StoreError`
        (the tracker retries at its next message or poll).
Rule 7: `PostgresStore.prune` deletes in chunks of ``prune_chunk`` rows, each chunk a statement
        and a transaction of its own that skips rows another transaction holds (``FOR UPDATE
        SKIP LOCKED``): it never holds a lock for long on a big table, never waits for a
        worker, and leaves a row a worker is busy with for the next prune. A prune that fails
        halfway has deleted some of the rows; running it again deletes the rest.

Round trips: a lookup is one; ``record_sent`` of a new send, a single ``mark_*``, a claim,
a lease and ``save_cursor`` outside a transaction are one each; a transaction is ``BEGIN``,
one per write, ``COMMIT``. psycopg prepares a statement after its fifth use on a connection;
behind PgBouncer in transaction mode, give the store a pool whose connections set
``prepare_threshold=None``.

Durability is the server's: with PostgreSQL's defaults (``fsync`` and ``synchronous_commit``
on) a committed transaction survives a crash of the server machine. Set ``lock_timeout`` (in
the conninfo's ``options``, or on the role) if a worker must not wait indefinitely for another
one holding a row lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

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
    aware_utc,
    canonical_id,
    check_cursor,
    check_key,
    check_lease,
    check_limit,
    check_text,
    group_lookup_ids,
    guid_bytes,
    iter_chunks,
    payload_bytes,
    stored_sent,
    subject_key,
)

try:
    import psycopg
    from psycopg import sql
    from psycopg.pq import TransactionStatus
    from psycopg.rows import tuple_row
    from psycopg_pool import ConnectionPool
except ImportError as _exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "replytrack.store.postgres needs psycopg 3 and psycopg-pool: "
        "pip install 'replytrack[postgres]'"
    ) from _exc

if TYPE_CHECKING:
    from typing_extensions import LiteralString

    from replytrack.headers import Address

__all__ = ["PostgresStore"]

_T = TypeVar("_T")
_Row = tuple[Any, ...]
_Params = Sequence[Any] | Mapping[str, Any] | None
_Connection = psycopg.Connection[Any]

_UTC: Final = _dt.timezone.utc
#: Ids per ``= ANY(...)`` lookup: one round trip answers a thousand.
CHUNK: Final = 1000
#: A schema name: a plain lower-case identifier, not one of PostgreSQL's reserved ``pg_``.
_SCHEMA_NAME: Final = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,62}")

_V1 = Migration(
    1,
    "sends, message ids, subject index, incoming ties, ledger, outbox, cursors, leases",
    (
        # Key columns are COLLATE "C": ids, keys and names compare byte for byte (a left
        # part of a Message-ID is case-sensitive), and C comparisons are the cheapest.
        "CREATE SEQUENCE send_ids AS bigint",
        """CREATE TABLE sends (
            id bigint PRIMARY KEY,
            message_id text COLLATE "C" NOT NULL,
            ref text COLLATE "C" NOT NULL,
            sender text NOT NULL,
            to_addrs text[] NOT NULL,
            cc_addrs text[] NOT NULL,
            subject text,
            sent_at timestamptz,
            provider_thread_id text COLLATE "C",
            thread_index bytea
        )""",
        "ALTER SEQUENCE send_ids OWNED BY sends.id",
        # "The newest send with this ref" is the first entry of the index: base Rule 3.
        "CREATE INDEX sends_ref ON sends (ref, sent_at DESC NULLS LAST, id DESC)",
        """CREATE INDEX sends_provider_thread
           ON sends (provider_thread_id, sent_at DESC NULLS LAST, id DESC)
           WHERE provider_thread_id IS NOT NULL""",
        """CREATE INDEX sends_thread_index
           ON sends (thread_index, sent_at DESC NULLS LAST, id DESC)
           WHERE thread_index IS NOT NULL""",
        # Every id that names a send: its own (alias false) and its aliases. The primary key
        # makes one id name at most one send (base Rule 2); sends are never deleted (base
        # Rule 8), so the ties need no foreign keys.
        """CREATE TABLE message_ids (
            message_id text COLLATE "C" PRIMARY KEY,
            send_id bigint NOT NULL,
            alias boolean NOT NULL
        )""",
        # The subject heuristic's index: one row per (subject, party) of a send, as 64-bit
        # hashes so that it stays small at a million sends; hits are checked on the send.
        """CREATE TABLE subject_index (
            subject_hash bigint NOT NULL,
            address_hash bigint NOT NULL,
            sent_at timestamptz,
            send_id bigint NOT NULL
        )""",
        """CREATE INDEX subject_index_lookup
           ON subject_index (subject_hash, address_hash, sent_at DESC NULLS LAST, send_id DESC)""",
        """CREATE TABLE incoming (
            message_id text COLLATE "C" PRIMARY KEY,
            send_id bigint NOT NULL
        )""",
        """CREATE TABLE processed (
            key text COLLATE "C" PRIMARY KEY,
            processed_at timestamptz NOT NULL
        )""",
        "CREATE INDEX processed_at ON processed (processed_at)",
        # An identity is never handed out twice, even once old rows are pruned, so a late
        # mark_delivered() from a slow worker cannot hit a newer entry.
        """CREATE TABLE outbox (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id text COLLATE "C" NOT NULL,
            hook text COLLATE "C" NOT NULL,
            payload bytea NOT NULL,
            state text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts integer NOT NULL,
            created_at timestamptz NOT NULL,
            next_attempt_at timestamptz,
            last_error text,
            finished_at timestamptz,
            UNIQUE (event_id, hook)
        )""",
        "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending'",
        "CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead'",
        "CREATE INDEX outbox_delivered ON outbox (finished_at) WHERE state = 'delivered'",
        """CREATE TABLE cursors (
            source text COLLATE "C" PRIMARY KEY,
            cursor text NOT NULL
        )""",
        """CREATE TABLE leases (
            source text COLLATE "C" PRIMARY KEY,
            worker text COLLATE "C" NOT NULL,
            expires_at timestamptz NOT NULL
        )""",
    ),
)

_SEND_COLUMNS: Final = (
    "s.id, s.message_id, s.ref, s.sender, s.to_addrs, s.cc_addrs, s.subject, s.sent_at,"
    " s.provider_thread_id, s.thread_index"
)
_OUTBOX_COLUMNS: Final = (
    "o.id, o.event_id, o.hook, o.payload, o.state, o.attempts, o.created_at,"
    " o.next_attempt_at, o.last_error, o.finished_at"
)
_NEWEST: Final = "ORDER BY s.sent_at DESC NULLS LAST, s.id DESC"
_STATES: Final = {state.value: state for state in OutboxState}


class _Queries:
    """Every statement of the store, rendered once for its schema (module Rule 1)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

        def q(template: LiteralString) -> bytes:
            # {s} is the schema, {seq} the send id sequence, {cols} {ocols} {newest} fixed
            # SQL; every value is a %s or %(name)s parameter.
            return (
                sql.SQL(template)
                .format(
                    s=sql.Identifier(schema),
                    seq=sql.Literal(sql.Identifier(schema, "send_ids").as_string()),
                    cols=sql.SQL(_SEND_COLUMNS),
                    ocols=sql.SQL(_OUTBOX_COLUMNS),
                    newest=sql.SQL(_NEWEST),
                )
                .as_bytes()
            )

        # -- reads --------------------------------------------------------------------------
        self.find_sent = q(
            "SELECT t.message_id, {cols} FROM {s}.message_ids t"
            " JOIN {s}.sends s ON s.id = t.send_id WHERE t.message_id = ANY(%s::text[])"
        )
        self.find_incoming = q(
            "SELECT t.message_id, {cols} FROM {s}.incoming t"
            " JOIN {s}.sends s ON s.id = t.send_id WHERE t.message_id = ANY(%s::text[])"
        )
        self.by_ref = q("SELECT {cols} FROM {s}.sends s WHERE s.ref = %s {newest} LIMIT 1")
        self.by_provider_thread = q(
            "SELECT {cols} FROM {s}.sends s WHERE s.provider_thread_id = %s {newest} LIMIT 1"
        )
        self.by_thread_index = q(
            "SELECT {cols} FROM {s}.sends s WHERE s.thread_index = %s::bytea {newest} LIMIT 1"
        )
        # The newest `limit` sends among those indexed under the subject and any party: each
        # party's own newest `limit` (an index walk each), merged. A send in the overall top
        # `limit` is in the top `limit` of every party it is indexed under, so nothing is
        # missed, and the work is bounded by parties x limit, not by how many sends match.
        subject_lookup = (
            "SELECT {cols} FROM {s}.sends s WHERE s.id IN ("
            " SELECT x.send_id FROM unnest(%(parties)s::bigint[]) AS p(hash)"
            " CROSS JOIN LATERAL (SELECT i.send_id FROM {s}.subject_index i"
            " WHERE i.subject_hash = %(subject)s AND i.address_hash = p.hash SINCE"
            " ORDER BY i.sent_at DESC NULLS LAST, i.send_id DESC LIMIT %(limit)s) x)"
            " {newest} LIMIT %(limit)s"
        )
        self.by_subject = q(subject_lookup.replace(" SINCE", ""))
        self.by_subject_since = q(subject_lookup.replace(" SINCE", " AND i.sent_at >= %(since)s"))
        self.is_processed = q("SELECT 1 FROM {s}.processed WHERE key = %s")
        self.find_processed = q("SELECT key FROM {s}.processed WHERE key = ANY(%s::text[])")
        self.due_outbox = q(
            "SELECT {ocols} FROM {s}.outbox o"
            " WHERE o.state = 'pending' AND o.next_attempt_at <= %s"
            " ORDER BY o.next_attempt_at, o.id LIMIT %s"
        )
        self.dead_outbox = q(
            "SELECT {ocols} FROM {s}.outbox o WHERE o.state = 'dead' ORDER BY o.id LIMIT %s"
        )
        self.find_outbox = q(
            "SELECT {ocols} FROM {s}.outbox o WHERE o.event_id = %s ORDER BY o.id"
        )
        self.load_cursor = q("SELECT cursor FROM {s}.cursors WHERE source = %s")
        self.send_of = q("SELECT send_id, alias FROM {s}.message_ids WHERE message_id = %s")
        self.entry_exists = q("SELECT 1 FROM {s}.outbox WHERE id = %s")

        # -- writes -------------------------------------------------------------------------
        # A new send in one statement: claim its id (the primary key of message_ids settles
        # a race between two workers recording it), then the send, then its subject rows.
        self.insert_send = q(
            "WITH claimed AS ("
            " INSERT INTO {s}.message_ids (message_id, send_id, alias)"
            " VALUES (%(mid)s, nextval({seq}::regclass), false)"
            " ON CONFLICT (message_id) DO NOTHING RETURNING send_id),"
            " added AS ("
            " INSERT INTO {s}.sends (id, message_id, ref, sender, to_addrs, cc_addrs, subject,"
            " sent_at, provider_thread_id, thread_index)"
            " SELECT send_id, %(mid)s::text, %(ref)s::text, %(sender)s::text, %(to)s::text[],"
            " %(cc)s::text[], %(subject)s::text, %(sent_at)s::timestamptz, %(thread)s::text,"
            " %(guid)s::bytea FROM claimed RETURNING id, sent_at),"
            " indexed AS ("
            " INSERT INTO {s}.subject_index (subject_hash, address_hash, sent_at, send_id)"
            " SELECT %(subject_hash)s::bigint, h, added.sent_at, added.id"
            " FROM added, unnest(%(parties)s::bigint[]) AS h)"
            " SELECT id FROM added"
        )
        self.lock_send = q("SELECT {cols} FROM {s}.sends s WHERE s.id = %s FOR UPDATE")
        self.update_send = q(
            "UPDATE {s}.sends SET ref = %(ref)s, sender = %(sender)s, to_addrs = %(to)s::text[],"
            " cc_addrs = %(cc)s::text[], subject = %(subject)s, sent_at = %(sent_at)s,"
            " provider_thread_id = %(thread)s, thread_index = %(guid)s::bytea WHERE id = %(id)s"
        )
        self.unindex_subject = q(
            "DELETE FROM {s}.subject_index WHERE subject_hash = %s"
            " AND address_hash = ANY(%s::bigint[]) AND send_id = %s"
        )
        self.index_subject = q(
            "INSERT INTO {s}.subject_index (subject_hash, address_hash, sent_at, send_id)"
            " SELECT %s::bigint, h, %s::timestamptz, %s::bigint FROM unnest(%s::bigint[]) AS h"
        )
        self.insert_alias = q(
            "WITH target AS (SELECT send_id FROM {s}.message_ids WHERE message_id = %(target)s),"
            " added AS (INSERT INTO {s}.message_ids (message_id, send_id, alias)"
            " SELECT %(alias)s::text, send_id, true FROM target"
            " ON CONFLICT (message_id) DO NOTHING RETURNING send_id)"
            " SELECT (SELECT send_id FROM target), (SELECT send_id FROM added)"
        )
        self.insert_incoming = q(
            "WITH target AS (SELECT send_id FROM {s}.message_ids WHERE message_id = %(target)s),"
            " tied AS (INSERT INTO {s}.incoming (message_id, send_id)"
            " SELECT %(incoming)s::text, send_id FROM target"
            " ON CONFLICT (message_id) DO NOTHING)"
            " SELECT send_id FROM target"
        )
        self.mark_processed = q(
            "INSERT INTO {s}.processed (key, processed_at) VALUES (%s, %s)"
            " ON CONFLICT (key) DO NOTHING"
        )
        # Look first (NOT EXISTS) rather than only ON CONFLICT: an insert that conflicts
        # still takes an identity value, and entry ids should not jump on every duplicate.
        self.enqueue = q(
            "INSERT INTO {s}.outbox (event_id, hook, payload, state, attempts, created_at,"
            " next_attempt_at)"
            " SELECT %(event)s::text, %(hook)s::text, %(payload)s::bytea, 'pending', 0,"
            " %(now)s::timestamptz, %(due)s::timestamptz"
            " WHERE NOT EXISTS (SELECT 1 FROM {s}.outbox"
            " WHERE event_id = %(event)s AND hook = %(hook)s)"
            " ON CONFLICT (event_id, hook) DO NOTHING RETURNING id"
        )
        self.mark_delivered = q(
            "UPDATE {s}.outbox SET state = 'delivered', next_attempt_at = NULL,"
            " finished_at = %s WHERE id = %s AND state <> 'delivered' RETURNING id"
        )
        self.mark_failed = q(
            "UPDATE {s}.outbox SET attempts = attempts + 1, next_attempt_at = %s,"
            " last_error = %s WHERE id = %s AND state = 'pending' RETURNING id"
        )
        self.mark_dead = q(
            "UPDATE {s}.outbox SET state = 'dead', attempts = attempts + 1,"
            " next_attempt_at = NULL, last_error = %s, finished_at = %s"
            " WHERE id = %s AND state = 'pending' RETURNING id"
        )
        self.save_cursor = q(
            "INSERT INTO {s}.cursors (source, cursor) VALUES (%s, %s)"
            " ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor"
        )
        # One round trip: lock the due rows no other claim holds (SKIP LOCKED), push their
        # due time to the end of the claim, return them as they were.
        self.claim_outbox = q(
            "WITH picked AS (SELECT id, next_attempt_at FROM {s}.outbox"
            " WHERE state = 'pending' AND next_attempt_at <= %(now)s"
            " ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " UPDATE {s}.outbox o SET next_attempt_at = %(until)s FROM picked"
            " WHERE o.id = picked.id"
            " RETURNING o.id, o.event_id, o.hook, o.payload, o.state, o.attempts, o.created_at,"
            " picked.next_attempt_at, o.last_error, o.finished_at"
        )
        # Of two workers claiming a free source at once, the second waits on the first's
        # row, then finds a lease that holds and updates nothing: exactly one winner.
        self.claim_source = q(
            "INSERT INTO {s}.leases AS l (source, worker, expires_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (source) DO UPDATE"
            " SET worker = EXCLUDED.worker, expires_at = EXCLUDED.expires_at"
            " WHERE l.worker = EXCLUDED.worker OR l.expires_at <= %s"
            " RETURNING l.worker"
        )
        self.release_source = q("DELETE FROM {s}.leases WHERE source = %s AND worker = %s")
        self.prune_ledger = q(
            "DELETE FROM {s}.processed WHERE key IN (SELECT key FROM {s}.processed"
            " WHERE processed_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)"
        )
        self.prune_outbox = q(
            "DELETE FROM {s}.outbox WHERE id IN (SELECT id FROM {s}.outbox"
            " WHERE state = 'delivered' AND finished_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)"
        )

        # -- migrations ---------------------------------------------------------------------
        self.migrations_table = sql.Identifier(schema, "schema_migrations").as_string()
        self.create_schema = q("CREATE SCHEMA {s}")
        self.create_migrations = q(
            "CREATE TABLE IF NOT EXISTS {s}.schema_migrations"
            " (version integer PRIMARY KEY, description text NOT NULL)"
        )
        self.current_version = q("SELECT COALESCE(MAX(version), 0) FROM {s}.schema_migrations")
        self.record_migration = q(
            "INSERT INTO {s}.schema_migrations (version, description) VALUES (%s, %s)"
        )


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def _hash64(text: str) -> int:
    """A stable signed 64-bit hash (a ``bigint``)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_key(schema: str) -> int:
    """The advisory lock that serialises migrations of `schema` (module Rule 2)."""
    return _hash64(f"replytrack:migrate:{schema}")


def _t(value: str) -> str:
    """`value` as PostgreSQL can keep it: NUL, which ``text`` cannot hold, as U+FFFD.

    Mail is hostile: a Message-ID with a NUL in it must be deduplicated and looked up like
    any other, not stop a poll with a `StoreError` (module Rule 5).
    """
    return value.replace("\x00", "\ufffd")


def _t_all(values: Iterable[str]) -> list[str]:
    return [v.replace("\x00", "\ufffd") for v in values]


def _utc(value: _dt.datetime | None) -> _dt.datetime | None:
    return None if value is None else value.astimezone(_UTC)


def _sent_from_row(row: _Row) -> SentMessage:
    """A `SentMessage` from the columns of `_SEND_COLUMNS` (the row id first)."""
    _, mid, ref, sender, to_addrs, cc_addrs, subject, sent_at, thread_id, guid = row
    return stored_sent(
        mid,
        ref,
        sender,
        tuple(to_addrs),
        tuple(cc_addrs),
        subject,
        _utc(sent_at),
        thread_id,
        None if guid is None else bytes(guid),
    )


def _entry_from_row(row: _Row) -> OutboxEntry:
    entry_id, event_id, hook, payload, state, attempts, created, due, error, finished = row
    return OutboxEntry(
        entry_id=entry_id,
        event_id=event_id,
        hook=hook,
        payload=bytes(payload),
        state=_STATES[state],
        attempts=attempts,
        created_at=created.astimezone(_UTC),
        next_attempt_at=_utc(due),
        last_error=error,
        finished_at=_utc(finished),
    )


def _subject_hashes(sent: SentMessage) -> tuple[int | None, list[int]]:
    """The subject index rows of `sent`: its subject's hash and its parties' (or none)."""
    key = sent.subject_key
    if key is None:
        return None, []
    return _hash64(key), sorted({_hash64(address_key(a)) for a in sent.participants})


def _send_params(sent: SentMessage) -> dict[str, Any]:
    subject_hash, parties = _subject_hashes(sent)
    return {
        "mid": _t(sent.message_id),
        "ref": _t(sent.ref),
        "sender": _t(sent.sender),
        "to": _t_all(sent.to),
        "cc": _t_all(sent.cc),
        "subject": None if sent.subject is None else _t(sent.subject),
        "sent_at": sent.sent_at,
        "thread": None if sent.provider_thread_id is None else _t(sent.provider_thread_id),
        "guid": sent.thread_index,
        "subject_hash": subject_hash,
        "parties": parties,
    }


def _entry_id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"no outbox entry {value!r}")
    return value


def _error_text(error: str) -> str:
    if not isinstance(error, str):
        raise ConfigError(f"error must be a str, not {type(error).__name__}")
    return error


def _failure(action: str, exc: psycopg.Error) -> StoreError:
    text = str(exc).strip() or type(exc).__name__
    return StoreError(f"PostgreSQL could not {action}: {text}")


def _configure(conn: _Connection) -> None:
    """Set up a connection of the store's own pool: times arrive in UTC (module Rule 5)."""
    conn.execute("SET TimeZone TO 'UTC'")


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class PostgresStore(BaseStore):
    """A store in a PostgreSQL database, shared by any number of workers; see the module's rules.

    Example::

        store = PostgresStore("host=db.internal dbname=sales user=replytrack")
        tracker = ReplyTracker(store, ...)

    Args:
        conninfo: a libpq connection string or URI (``"postgresql://user@host/db"``). Give
            either this or `pool`.
        schema: the schema holding replytrack's tables (created when missing); a plain
            lower-case identifier. Several replytrack installations may share a database,
            each in its own schema.
        pool: a host's own `psycopg_pool.ConnectionPool`, opened, to borrow connections from
            instead of making a pool; the store does not close it.
        min_size: connections the store's own pool keeps open.
        max_size: most connections the store's own pool opens: the threads that can work
            at once (each transaction holds one for its block).
        timeout: seconds to wait for a connection (to connect, or for a free one in the pool)
            before `StoreError`.
        prune_chunk: rows `prune` deletes per statement (module Rule 7).

    Raises:
        StoreError: the server cannot be reached or refused the connection, or the schema is
            newer than this version of replytrack.
        ConfigError: an argument is invalid.
    """

    #: The schema's forward steps, oldest first. A subclass may append its own; their
    #: statements run with ``search_path`` set to the store's schema, so they name tables
    #: without a schema.
    MIGRATIONS: ClassVar[tuple[Migration, ...]] = (_V1,)

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        schema: str = "replytrack",
        pool: ConnectionPool[_Connection] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        prune_chunk: int = 1000,
    ) -> None:
        self._check_migrations()
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                "schema must be a lower-case identifier (letters, digits, _; not pg_...), "
                f"not {schema!r}"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        check_limit(min_size + 1, "min_size + 1")  # min_size may be 0
        check_limit(max_size, "max_size")
        if min_size > max_size:
            raise ConfigError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        self._prune_chunk = check_limit(prune_chunk, "prune_chunk")
        self._schema = schema
        self._q = _Queries(schema)
        self._timeout = float(timeout)
        self._local = threading.local()
        self._pid = os.getpid()
        #: ids of the host's connections switched to autocommit while borrowed (module Rule 3)
        self._switched: set[int] = set()
        self._own_pool = pool is None
        if pool is not None:
            if conninfo is not None:
                raise ConfigError("give either conninfo or pool, not both")
            if not isinstance(pool, ConnectionPool):
                raise ConfigError(
                    f"pool must be a psycopg_pool.ConnectionPool, not {type(pool).__name__}"
                )
            if pool.closed:
                raise ConfigError("the pool is closed: open it before giving it to the store")
            self._pool = pool
        else:
            self._pool = self._make_pool(conninfo, min_size, max_size)
        try:
            if self._own_pool:
                # A direct first connection: an unreachable server or a refused login fails
                # here at once, with libpq's own message, not after the pool's timeout.
                with _translated("connect"):
                    conn = psycopg.connect(self._conninfo, autocommit=True, **self._connect_kw)
                with conn:
                    self._migrate(conn)
                self._pool.open(wait=False)
            else:
                with self._borrow() as conn:
                    self._migrate(conn)
        except BaseException:
            self._closed = True
            if self._own_pool:
                self._pool.close()
            raise

    def _make_pool(
        self, conninfo: str | None, min_size: int, max_size: int
    ) -> ConnectionPool[_Connection]:
        if not isinstance(conninfo, str):
            raise ConfigError("give a conninfo string (or a pool)")
        try:
            parsed = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigError(f"not a PostgreSQL connection string: {exc}") from exc
        self._conninfo = conninfo
        # Without connect_timeout libpq may wait minutes for a host that does not answer.
        self._connect_kw: dict[str, Any] = {}
        if "connect_timeout" not in parsed and not os.environ.get("PGCONNECT_TIMEOUT"):
            self._connect_kw["connect_timeout"] = max(2, round(self._timeout))
        return ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=self._timeout,
            kwargs={"autocommit": True, **self._connect_kw},
            configure=_configure,
            name=f"replytrack-{self._schema}",
            open=False,
        )

    @property
    def schema(self) -> str:
        """The schema holding the store's tables."""
        return self._schema

    @property
    def pool(self) -> ConnectionPool[_Connection]:
        """The connection pool the store borrows from (its own, or the host's)."""
        return self._pool

    @property
    def schema_version(self) -> int:
        """The schema version of the database (the newest applied `Migration`)."""
        rows = self._rows("read the schema version", self._q.current_version, None)
        return int(rows[0][0])

    def _close(self) -> None:
        if self._own_pool:
            self._pool.close()

    # -- migrations (module Rule 2) -----------------------------------------------------------

    @classmethod
    def _check_migrations(cls) -> None:
        versions = [m.version for m in cls.MIGRATIONS]
        if versions != list(range(1, len(versions) + 1)):
            raise ConfigError(f"MIGRATIONS must be versions 1, 2, 3 ... in order: {versions}")

    def _current_version(self, cur: psycopg.Cursor[_Row]) -> int:
        cur.execute("SELECT to_regclass(%s)", (self._q.migrations_table,))
        row = cur.fetchone()
        if row is None or row[0] is None:
            return 0
        cur.execute(self._q.current_version)
        row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def _refuse_newer(self, current: int, latest: int) -> None:
        if current > latest:
            raise StoreError(
                f"the schema {self._schema!r} has version {current}, newer than this replytrack"
                f" understands ({latest}); upgrade replytrack"
            )

    def _migrate(self, conn: _Connection) -> None:
        latest = self.MIGRATIONS[-1].version
        with _translated("migrate the schema"), conn.cursor(row_factory=tuple_row) as cur:
            current = self._current_version(cur)
            self._refuse_newer(current, latest)
            if current == latest:
                return  # the common case: no lock taken at all
            with conn.transaction():
                # Workers opening a new database at once queue here; the first migrates, the
                # others then read its version and apply nothing.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self._schema),))
                cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,))
                if cur.fetchone() is None:
                    cur.execute(self._q.create_schema)
                cur.execute(self._q.create_migrations)
                current = self._current_version(cur)
                self._refuse_newer(current, latest)
                # Migration statements name tables without a schema (SET LOCAL: this
                # transaction only).
                cur.execute(
                    "SELECT set_config('search_path', %s, true)",
                    (sql.Identifier(self._schema).as_string(),),
                )
                for migration in self.MIGRATIONS[current:]:
                    for statement in migration.statements:
                        cur.execute(statement.encode())
                    cur.execute(
                        self._q.record_migration, (migration.version, migration.description)
                    )

    # -- connections (module Rules 3 and 6) ---------------------------------------------------

    def _getconn(self) -> _Connection:
        """A connection of the pool, switched to autocommit (see `_putconn`)."""
        if os.getpid() != self._pid:
            raise ConfigError(
                "a PostgresStore must not cross fork(): open a new one in the child process"
            )
        with _translated("get a connection from the pool"):
            conn = self._pool.getconn()
        if not conn.autocommit:  # a host's pool: switched back by _putconn
            try:
                conn.autocommit = True
            except psycopg.Error as exc:  # pragma: no cover - a pool hands out idle ones
                self._pool.putconn(conn)
                raise _failure("use a connection of the pool", exc) from exc
            self._switched.add(id(conn))
        return conn

    def _putconn(self, conn: _Connection) -> None:
        """Give `conn` back to the pool, in the autocommit mode it came in."""
        if id(conn) in self._switched:
            self._switched.discard(id(conn))
            if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.autocommit = False
        self._pool.putconn(conn)

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[_Connection]:
        """A connection of the pool, in autocommit mode, for one call."""
        conn = self._getconn()
        try:
            yield conn
        finally:
            self._putconn(conn)

    def _broken(self, conn: _Connection) -> bool:
        """Whether `conn` died; if so, have the pool check its idle connections at once."""
        if not (conn.broken or conn.closed):
            return False
        with contextlib.suppress(psycopg.Error):
            self._pool.check()
        return True

    def _tries(self) -> int:
        """How often a lookup or a ``BEGIN`` may meet a dead connection (module Rule 6)."""
        return self._pool.max_size + 1

    def _pinned(self) -> _PostgresTransaction | None:
        tx: _PostgresTransaction | None = getattr(self._local, "tx", None)
        return tx

    def _rows(self, action: str, query: bytes, params: _Params) -> list[_Row]:
        """Run one read: in this thread's transaction, else on a borrowed connection.

        A read that met a dead connection is retried on another (module Rule 6).
        """
        self._check_open()
        tx = self._pinned()
        if tx is not None:
            return tx.rows(action, query, params)
        tries = self._tries()
        for attempt in range(1, tries + 1):
            with self._borrow() as conn:
                try:
                    return _execute(conn, query, params)
                except psycopg.Error as exc:
                    if attempt < tries and self._broken(conn):
                        continue
                    raise _failure(action, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _single(self, work: Callable[[_PostgresTransaction], _T]) -> _T:
        """Run `work` outside any transaction: each of its statements commits by itself.

        For writes that are one statement (or one write and reads), so that they cost one
        round trip instead of ``BEGIN``, the write and ``COMMIT``.

        Raises:
            ConfigError: a transaction is open in this thread (they do not nest).
        """
        self._check_open()
        if self._pinned() is not None:
            raise ConfigError("transactions do not nest; use the open transaction")
        with self._borrow() as conn:
            session = _PostgresTransaction(conn, self._q)
            try:
                return work(session)
            finally:
                session.finished = True
                if session.failed:
                    self._broken(conn)

    # -- the unit of work --------------------------------------------------------------------

    def _begin(self) -> _Connection:
        """Borrow a connection and ``BEGIN`` on it; a dead one is replaced (module Rule 6)."""
        tries = self._tries()
        for attempt in range(1, tries + 1):
            conn = self._getconn()
            try:
                conn.execute(b"BEGIN")
            except psycopg.Error as exc:
                retry = attempt < tries and self._broken(conn)
                self._putconn(conn)
                if retry:
                    continue
                raise _failure("begin a transaction", exc) from exc
            except BaseException:
                self._putconn(conn)
                raise
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Open an atomic unit of writes; see `replytrack.store.Store.transaction`.

        Raises:
            ConfigError: the store is closed, or this thread has a transaction open already.
            StoreError: no connection could be had within ``timeout``, a statement failed,
                or the commit failed (then nothing was written).
        """
        self._check_open()
        if self._pinned() is not None:
            raise ConfigError("transactions do not nest; use the open transaction")
        conn = self._begin()
        tx = _PostgresTransaction(conn, self._q)
        self._local.tx = tx
        try:
            try:
                yield tx
            except BaseException:
                tx.finished = True
                with contextlib.suppress(psycopg.Error):
                    conn.execute(b"ROLLBACK")
                raise
            tx.finished = True
            if tx.failed:
                # The caller went on after a StoreError: PostgreSQL aborted the transaction
                # at that statement, so nothing of it can be committed.
                with contextlib.suppress(psycopg.Error):
                    conn.execute(b"ROLLBACK")
                raise StoreError(
                    "PostgreSQL rolled the transaction back: a statement in it failed"
                )
            try:
                status = conn.execute(b"COMMIT").statusmessage
            except psycopg.Error as exc:
                self._broken(conn)
                raise _failure("commit", exc) from exc
            if status != "COMMIT":
                raise StoreError(f"PostgreSQL answered {status!r} to COMMIT: nothing was written")
        finally:
            tx.finished = True
            self._local.tx = None
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(b"ROLLBACK")
            self._putconn(conn)

    # -- single writes, one round trip each (module docstring) ----------------------------------

    def record_sent(self, sent: SentMessage) -> None:
        """Record a send; see `replytrack.store.Transaction.record_sent`."""
        if not isinstance(sent, SentMessage):
            raise ConfigError(f"record_sent() takes a SentMessage, not {type(sent).__name__}")
        if not self._single(lambda s: s.insert_send(sent)):
            with self.transaction() as tx:  # recorded already: a replacement, or an alias
                tx.record_sent(sent)

    def record_alias(self, message_id: str, alias_id: str) -> None:
        """Add an id of a recorded send; see `replytrack.store.Transaction.record_alias`."""
        self._single(lambda s: s.record_alias(message_id, alias_id))

    def record_incoming(self, message_id: str, sent_message_id: str) -> None:
        """Tie an incoming message to a send; see `replytrack.store.Transaction`."""
        self._single(lambda s: s.record_incoming(message_id, sent_message_id))

    def mark_delivered(self, entry_id: int, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_delivered`."""
        self._single(lambda s: s.mark_delivered(entry_id, now))

    def mark_failed(self, entry_id: int, error: str, retry_at: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_failed`."""
        self._single(lambda s: s.mark_failed(entry_id, error, retry_at))

    def mark_dead(self, entry_id: int, error: str, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_dead`."""
        self._single(lambda s: s.mark_dead(entry_id, error, now))

    def save_cursor(self, source: str, cursor: str) -> None:
        """See `replytrack.store.Transaction.save_cursor`."""
        self._single(lambda s: s.save_cursor(source, cursor))

    # -- reads -------------------------------------------------------------------------------

    def _find_by_ids(
        self, query: bytes, action: str, message_ids: Iterable[str]
    ) -> dict[str, SentMessage]:
        grouped: dict[str, list[str]] = {}
        for canonical, given in group_lookup_ids(message_ids).items():
            grouped.setdefault(_t(canonical), []).extend(given)
        found: dict[str, SentMessage] = {}
        by_row: dict[int, SentMessage] = {}  # one SentMessage per send, however many ids hit it
        for chunk in iter_chunks(list(grouped), CHUNK):
            for matched, *columns in self._rows(action, query, (chunk,)):
                sent = by_row.get(columns[0])
                if sent is None:
                    sent = by_row[columns[0]] = _sent_from_row(tuple(columns))
                found.update(dict.fromkeys(grouped[matched], sent))
        return found

    def find_sent(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `replytrack.store.Store.find_sent`."""
        return self._find_by_ids(self._q.find_sent, "look up sends", message_ids)

    def find_incoming(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `replytrack.store.Store.find_incoming`."""
        return self._find_by_ids(self._q.find_incoming, "look up incoming ties", message_ids)

    def _newest(self, query: bytes, value: object) -> SentMessage | None:
        rows = self._rows("look up a send", query, (value,))
        return _sent_from_row(rows[0]) if rows else None

    def find_sent_by_ref(self, ref: str) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_ref`."""
        return self._newest(self._q.by_ref, _t(check_text(ref, "ref")))

    def find_sent_by_provider_thread(self, thread_id: str) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_provider_thread`."""
        return self._newest(self._q.by_provider_thread, _t(check_text(thread_id, "thread_id")))

    def find_sent_by_thread_index(self, guid: bytes) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_thread_index`."""
        return self._newest(self._q.by_thread_index, guid_bytes(guid))

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
        floor = None if since is None else aware_utc(since, "since")
        if key is None or not parties:
            return []
        params: dict[str, Any] = {
            "subject": _hash64(key),
            "parties": sorted({_hash64(p) for p in parties}),
            "since": floor,
        }
        query = self._q.by_subject if floor is None else self._q.by_subject_since
        # The index holds hashes: check the real subject and parties. A hash collision
        # (about never) costs a second query with room for the rows it dropped.
        want = limit
        while True:
            rows = self._rows("look up sends by subject", query, {**params, "limit": want})
            found = [
                sent
                for sent in map(_sent_from_row, rows)
                if sent.subject_key == key
                and not parties.isdisjoint(address_key(a) for a in sent.participants)
            ]
            if len(found) >= limit or len(rows) < want:
                return found[:limit]
            want *= 2

    def is_processed(self, key: str) -> bool:
        """See `replytrack.store.Store.is_processed`."""
        check_key(key, "key")
        return bool(self._rows("read the ledger", self._q.is_processed, (_t(key),)))

    def find_processed(self, keys: Iterable[str]) -> set[str]:
        """See `replytrack.store.Store.find_processed`."""
        wanted = {_t(check_key(key, "key")): key for key in keys}
        found: set[str] = set()
        for chunk in iter_chunks(list(wanted), CHUNK):
            rows = self._rows("read the ledger", self._q.find_processed, (chunk,))
            found.update(wanted[row[0]] for row in rows)
        return found

    def due_outbox(self, now: _dt.datetime, limit: int = 100) -> list[OutboxEntry]:
        """See `replytrack.store.Store.due_outbox`."""
        moment = aware_utc(now, "now")
        check_limit(limit)
        rows = self._rows("read the outbox", self._q.due_outbox, (moment, limit))
        return [_entry_from_row(r) for r in rows]

    def dead_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """See `replytrack.store.Store.dead_outbox`."""
        check_limit(limit)
        rows = self._rows("read the outbox", self._q.dead_outbox, (limit,))
        return [_entry_from_row(r) for r in rows]

    def find_outbox(self, event_id: str) -> list[OutboxEntry]:
        """See `replytrack.store.Store.find_outbox`."""
        check_key(event_id, "event_id")
        rows = self._rows("read the outbox", self._q.find_outbox, (_t(event_id),))
        return [_entry_from_row(r) for r in rows]

    def load_cursor(self, source: str) -> str | None:
        """See `replytrack.store.Store.load_cursor`."""
        check_key(source, "source")
        rows = self._rows("read a cursor", self._q.load_cursor, (_t(source),))
        return str(rows[0][0]) if rows else None

    # -- work sharing and retention ------------------------------------------------------------

    def claim_outbox(
        self, now: _dt.datetime, until: _dt.datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """See `replytrack.store.Store.claim_outbox`.

        One statement: ``SELECT ... FOR UPDATE SKIP LOCKED`` inside an ``UPDATE ...
        RETURNING``. Claims running at once in other processes skip the rows this one is
        taking instead of waiting for them, and never get them: once it commits, their due
        time is `until`.
        """
        moment, expiry = check_lease(now, until)
        check_limit(limit)
        params = {"now": moment, "until": expiry, "limit": limit}
        rows = self._single(lambda s: s.rows("claim outbox entries", self._q.claim_outbox, params))
        # RETURNING has no order: longest-due first, as due_outbox.
        return sorted(map(_entry_from_row, rows), key=lambda e: (e.next_attempt_at, e.entry_id))

    def claim_source(
        self, source: str, worker: str, now: _dt.datetime, until: _dt.datetime
    ) -> bool:
        """See `replytrack.store.Store.claim_source`.

        One atomic upsert: ``INSERT ... ON CONFLICT (source) DO UPDATE ... WHERE`` the lease
        is the worker's own or has expired.
        """
        check_key(source, "source")
        check_key(worker, "worker")
        moment, expiry = check_lease(now, until)
        params = (_t(source), _t(worker), expiry, moment)
        rows = self._single(lambda s: s.rows("claim a source", self._q.claim_source, params))
        return bool(rows)

    def release_source(self, source: str, worker: str) -> None:
        """See `replytrack.store.Store.release_source`."""
        check_key(source, "source")
        check_key(worker, "worker")
        params = (_t(source), _t(worker))
        self._single(lambda s: s.count("release a source", self._q.release_source, params))

    def prune(self, before: _dt.datetime) -> Pruned:
        """See `replytrack.store.Store.prune`.

        Deletes at most ``prune_chunk`` rows per statement, each statement a transaction of
        its own that skips rows other transactions hold (module Rule 7).
        """
        cutoff = aware_utc(before, "before")

        def delete(session: _PostgresTransaction) -> Pruned:
            counts = []
            for query in (self._q.prune_ledger, self._q.prune_outbox):
                total = 0
                while True:
                    deleted = session.count("prune", query, (cutoff, self._prune_chunk))
                    total += deleted
                    if deleted < self._prune_chunk:
                        break
                counts.append(total)
            return Pruned(ledger=counts[0], outbox=counts[1])

        return self._single(delete)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn `psycopg.Error` into `StoreError` (module Rule 6)."""
    try:
        yield
    except psycopg.Error as exc:
        raise _failure(action, exc) from exc


def _execute(conn: _Connection, query: bytes, params: _Params) -> list[_Row]:
    """Run `query`, a statement with a result; return its rows."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(query, params, binary=True)
        return cur.fetchall()


class _PostgresTransaction:
    """The writes of one `PostgresStore` transaction (see `replytrack.store.Transaction`).

    Also the session of a single write outside a transaction (`PostgresStore._single`), where
    each statement commits by itself: then only methods whose one write is one statement are
    called.
    """

    def __init__(self, conn: _Connection, queries: _Queries) -> None:
        self._conn = conn
        self._q = queries
        self.finished = False
        #: A statement failed: PostgreSQL aborted the transaction.
        self.failed = False

    def _run(self, action: str, query: bytes, params: _Params) -> psycopg.Cursor[_Row]:
        if self.finished:
            raise ConfigError("the transaction is over; open a new one")
        cur = self._conn.cursor(row_factory=tuple_row)
        try:
            cur.execute(query, params, binary=True)
        except psycopg.Error as exc:
            cur.close()
            self.failed = True
            raise _failure(action, exc) from exc
        return cur

    def rows(self, action: str, query: bytes, params: _Params) -> list[_Row]:
        """Run a statement with a result (a query, or RETURNING); return its rows."""
        with self._run(action, query, params) as cur:
            return cur.fetchall()

    def count(self, action: str, query: bytes, params: _Params) -> int:
        """Run a statement; return how many rows it changed."""
        with self._run(action, query, params) as cur:
            return cur.rowcount

    # -- sends -------------------------------------------------------------------------------

    def insert_send(self, sent: SentMessage) -> bool:
        """Record `sent` if its id names nothing yet; False when it does (nothing written)."""
        return bool(self.rows("record a send", self._q.insert_send, _send_params(sent)))

    def record_sent(self, sent: SentMessage) -> None:
        """See `replytrack.store.Transaction.record_sent`."""
        if self.finished:
            raise ConfigError("the transaction is over; open a new one")
        if not isinstance(sent, SentMessage):
            raise ConfigError(f"record_sent() takes a SentMessage, not {type(sent).__name__}")
        if self.insert_send(sent):
            return
        mid = _t(sent.message_id)
        known = self.rows("record a send", self._q.send_of, (mid,))
        if not known:  # pragma: no cover - only if the id's row was deleted meanwhile
            raise StoreError(f"the id {mid!r} vanished while its send was recorded")
        send_id, alias = known[0]
        if alias:
            raise ConfigError(f"{mid!r} is an alias of another send")
        # Lock the send (another worker replacing it at once waits), then move it in the
        # subject index and replace its fields; its id, aliases and ties stay.
        (old_row,) = self.rows("record a send", self._q.lock_send, (send_id,))
        old_hash, old_parties = _subject_hashes(_sent_from_row(old_row))
        if old_hash is not None:
            self.count("record a send", self._q.unindex_subject, (old_hash, old_parties, send_id))
        params = _send_params(sent)
        self.count("record a send", self._q.update_send, {**params, "id": send_id})
        if params["subject_hash"] is not None:
            self.count(
                "record a send",
                self._q.index_subject,
                (params["subject_hash"], sent.sent_at, send_id, params["parties"]),
            )

    def record_alias(self, message_id: str, alias_id: str) -> None:
        """See `replytrack.store.Transaction.record_alias`."""
        target, alias = _t(canonical_id(message_id)), _t(canonical_id(alias_id))
        params = {"target": target, "alias": alias}
        ((send_id, added),) = self.rows("record an alias", self._q.insert_alias, params)
        if send_id is None:
            raise ConfigError(f"no send is recorded as {message_id!r}")
        if added is not None:
            return
        # The alias names a send already (committed before, or by a worker just now).
        owner = self.rows("record an alias", self._q.send_of, (alias,))
        if not owner or owner[0][0] != send_id:
            raise ConfigError(f"{alias_id!r} already names another send")

    def record_incoming(self, message_id: str, sent_message_id: str) -> None:
        """See `replytrack.store.Transaction.record_incoming`."""
        incoming, target = _t(canonical_id(message_id)), _t(canonical_id(sent_message_id))
        params = {"incoming": incoming, "target": target}
        if not self.rows("tie an incoming message", self._q.insert_incoming, params):
            raise ConfigError(f"no send is recorded as {sent_message_id!r}")

    # -- ledger and outbox ---------------------------------------------------------------------

    def mark_processed(self, key: str, processed_at: _dt.datetime) -> bool:
        """See `replytrack.store.Transaction.mark_processed`."""
        check_key(key, "key")
        at = aware_utc(processed_at, "processed_at")
        return self.count("write the ledger", self._q.mark_processed, (_t(key), at)) == 1

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
        params = {
            "event": _t(check_key(event_id, "event_id")),
            "hook": _t(check_key(hook, "hook")),
            "payload": payload_bytes(payload),
            "now": aware_utc(now, "now"),
            "due": aware_utc(now if due_at is None else due_at, "due_at"),
        }
        rows = self.rows("enqueue", self._q.enqueue, params)
        return int(rows[0][0]) if rows else None

    def _require_entry(self, entry_id: int) -> None:
        if not self.rows("read the outbox", self._q.entry_exists, (entry_id,)):
            raise ConfigError(f"no outbox entry {entry_id!r}")

    def mark_delivered(self, entry_id: int, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_delivered`."""
        entry = _entry_id(entry_id)
        moment = aware_utc(now, "now")
        if not self.rows("mark an entry delivered", self._q.mark_delivered, (moment, entry)):
            self._require_entry(entry)  # delivered already, or no such entry

    def mark_failed(self, entry_id: int, error: str, retry_at: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_failed`."""
        entry = _entry_id(entry_id)
        params = (aware_utc(retry_at, "retry_at"), _t(_error_text(error)), entry)
        if not self.rows("mark an entry failed", self._q.mark_failed, params):
            self._require_entry(entry)  # no longer pending, or no such entry

    def mark_dead(self, entry_id: int, error: str, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_dead`."""
        entry = _entry_id(entry_id)
        params = (_t(_error_text(error)), aware_utc(now, "now"), entry)
        if not self.rows("mark an entry dead", self._q.mark_dead, params):
            self._require_entry(entry)

    def save_cursor(self, source: str, cursor: str) -> None:
        """See `replytrack.store.Transaction.save_cursor`."""
        params = (_t(check_key(source, "source")), _t(check_cursor(cursor)))
        self.count("save a cursor", self._q.save_cursor, params)
