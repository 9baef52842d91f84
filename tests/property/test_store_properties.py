"""Every store answers alike: random sequences of operations on MemoryStore and SQLiteStore.

Hypothesis draws a program (sends, aliases, incoming ties, lookups, transactions that commit
or raise halfway) and runs it on both stores; each step must return the same value, or fail
with the same exception type, on both. Small pools of ids, refs and times make collisions,
replacements and ties common.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replytrack.headers import normalize_msg_id
from replytrack.store import MemoryStore, SentMessage, SQLiteStore, Store
from replytrack.store.base import _PLAIN_ID, canonical_id

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, tzinfo=UTC)

ids = st.sampled_from(["a@x.example", "b@x.example", "c@x.example", "d@x.example"])
aliases = st.sampled_from(["g1@graph.example", "<G2@Graph.example>"])
spelled_ids = st.one_of(
    ids,
    aliases,
    ids.map(lambda i: f"<{i}>"),
    ids.map(lambda i: i.replace("x.example", "X.EXAMPLE")),
    st.sampled_from(["", "junk", "<>", "r1@p.example", "r2@p.example"]),
)
incoming_ids = st.sampled_from(["r1@p.example", "r2@p.example", "<r3@P.example>"])
times = st.one_of(st.none(), st.sampled_from([T0 + dt.timedelta(hours=h) for h in range(3)]))
moments = st.sampled_from([T0 + dt.timedelta(minutes=m) for m in (0, 5, 60, 600)])
refs = st.sampled_from(["r1", "r2", "r3"])
threads = st.sampled_from([None, "t1", "t2"])
guids = st.sampled_from([None, bytes(16), b"\x01" * 16])
subjects = st.sampled_from([None, "Hello", "Re: hello", "Pricing"])
people = st.sampled_from(["pat@p.example", "ann@p.example", "cfo@p.example"])
entry_ids = st.integers(min_value=1, max_value=6)

sends = st.builds(
    SentMessage,
    ids,
    refs,
    st.sampled_from(["rep@v.example", "sdr@v.example"]),
    st.lists(people, max_size=2).map(tuple),
    st.lists(people, max_size=1).map(tuple),
    subject=subjects,
    sent_at=times,
    provider_thread_id=threads,
    thread_index=guids,
)

Op = tuple[Any, ...]

# Writes a store offers outside a transaction, and those only a transaction offers.
# Sends are drawn often: most other writes need one to exist.
store_writes = st.one_of(
    st.tuples(st.just("record_sent"), sends),
    st.tuples(st.just("record_sent"), sends),
    st.tuples(st.just("record_sent"), sends),
    st.tuples(st.just("record_alias"), ids, ids),
    st.tuples(st.just("record_alias"), st.one_of(ids, aliases), aliases),
    st.tuples(st.just("record_incoming"), incoming_ids, ids),
    st.tuples(st.just("record_incoming"), incoming_ids, spelled_ids),
    st.tuples(st.just("save_cursor"), st.sampled_from(["s1", "s2"]), st.text(max_size=5)),
    st.tuples(st.just("mark_delivered"), entry_ids, moments),
    st.tuples(st.just("mark_failed"), entry_ids, st.text(max_size=5), moments),
    st.tuples(st.just("mark_dead"), entry_ids, st.text(max_size=5), moments),
)
tx_writes = st.one_of(
    store_writes,
    st.tuples(st.just("mark_processed"), st.sampled_from(["k1", "k2", "k3"]), moments),
    st.tuples(
        st.just("enqueue"),
        st.sampled_from(["e1", "e2", "e3", "e4"]),
        st.sampled_from(["h1", "h2"]),
        st.binary(max_size=8),
        moments,
    ),
    st.tuples(
        st.just("enqueue"), st.sampled_from(["e1", "e2"]), st.just("h1"), st.just(b""), moments
    ),
)
reads = st.one_of(
    st.tuples(st.just("find_sent"), st.lists(spelled_ids, max_size=5)),
    st.tuples(
        st.just("find_incoming"), st.lists(st.one_of(incoming_ids, spelled_ids), max_size=4)
    ),
    st.tuples(st.just("find_sent_by_ref"), refs),
    st.tuples(st.just("find_sent_by_provider_thread"), st.sampled_from(["t1", "t2", "t3"])),
    st.tuples(st.just("find_sent_by_thread_index"), st.sampled_from([bytes(16), b"\x01" * 16])),
    st.tuples(
        st.just("find_sent_by_subject"),
        subjects.filter(bool),
        st.lists(st.one_of(people, st.just("REP@v.example")), max_size=3),
        st.one_of(st.none(), moments),
        st.integers(1, 3),
    ),
    st.tuples(st.just("is_processed"), st.sampled_from(["k1", "k2", "k3"])),
    st.tuples(st.just("due_outbox"), moments, st.integers(1, 4)),
    st.tuples(st.just("dead_outbox"), st.integers(1, 4)),
    st.tuples(st.just("find_outbox"), st.sampled_from(["e1", "e2", "e3"])),
    st.tuples(st.just("load_cursor"), st.sampled_from(["s1", "s2"])),
)
# Most transactions commit; one in five raises after its writes.
transactions = st.tuples(
    st.just("transaction"),
    st.lists(tx_writes, min_size=1, max_size=6),
    st.integers(0, 4).map(lambda n: n == 0),
)
# A few sends first, so that the other writes have something to refer to.
programs = st.tuples(
    st.lists(st.tuples(st.just("record_sent"), sends), min_size=1, max_size=4),
    st.lists(st.one_of(store_writes, reads, transactions), max_size=30),
).map(lambda parts: parts[0] + parts[1])


class AbortError(Exception):
    """Raised inside a transaction block to make it roll back."""


def _write(target: Any, op: Op) -> Any:
    name, *args = op
    if name == "find_sent_by_subject":
        subject, parties, since, limit = args
        return target.find_sent_by_subject(subject, parties, since, limit=limit)
    method: Callable[..., Any] = getattr(target, name)
    return method(*args)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """The result of `call`, or the type of what it raised."""
    try:
        return ("ok", call())
    except Exception as exc:
        return ("error", type(exc).__name__)


def run(store: Store, op: Op) -> tuple[str, Any]:
    """Run one step of a program."""
    if op[0] != "transaction":
        return outcome(lambda: _write(store, op))
    _, steps, abort = op

    def transaction() -> list[tuple[str, Any]]:
        with store.transaction() as tx:
            # A write refused with ConfigError wrote nothing: the transaction may go on.
            results = [outcome(functools.partial(_write, tx, step)) for step in steps]
            if abort:
                raise AbortError
        return results

    return outcome(transaction)


@settings(max_examples=300, deadline=None)
@given(program=programs)
def test_memory_and_sqlite_stores_agree(program: list[Op]) -> None:
    with MemoryStore() as memory, SQLiteStore(":memory:") as sqlite:
        for op in program:
            assert run(memory, op) == run(sqlite, op), op
        # And the final states agree on everything observable.
        for final in (
            ("find_sent", ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]),
            ("find_sent", ["g1@graph.example", "G2@graph.example"]),
            ("find_incoming", ["r1@p.example", "r2@p.example", "r3@p.example"]),
            ("due_outbox", T0 + dt.timedelta(days=1), 100),
            ("dead_outbox", 100),
        ):
            assert run(memory, final) == run(sqlite, final), final


id_text = st.text(
    alphabet=st.sampled_from("ab.-_+=~!#$%&*/?^`{|}'\"\\,;:[]AZ09é@<> ()"), min_size=1, max_size=12
)


@settings(max_examples=500, deadline=None)
@given(left=id_text, domain=id_text)
def test_the_canonical_fast_path_agrees_with_the_parser(left: str, domain: str) -> None:
    """An id taken as already canonical is exactly what the parser makes of it."""
    value = f"{left}@{domain}"
    if _PLAIN_ID.fullmatch(value):
        assert canonical_id(value) == normalize_msg_id(f"<{value}>")
        assert canonical_id(value) == canonical_id(f"<{value}>")
