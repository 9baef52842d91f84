"""The store contract: every `Store` implementation passes this same suite.

Each test takes the ``store`` fixture, which runs it once per entry of `STORES`. A new backend
joins with one line there (the factory may skip through ``pytest.skip`` when its server is
missing, as PostgreSQL's does through ``servers.server_missing``). Behaviour that only
one backend has (files, WAL, processes) is tested beside that backend, not here.
"""

from __future__ import annotations

import datetime as dt
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from replytrack.errors import ConfigError
from replytrack.headers import Address
from replytrack.store import (
    MemoryStore,
    OutboxEntry,
    OutboxState,
    Pruned,
    SentMessage,
    SQLiteStore,
    Store,
)

StoreFactory = Callable[[pytest.FixtureRequest, Path], Store]


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A PostgresStore on a fresh database of the session's server (skips, or fails in CI,
    without one: the ``postgres_dsn`` fixture in conftest.py)."""
    dsn = request.getfixturevalue("postgres_dsn")  # first: it skips without a server
    from replytrack.store.postgres import PostgresStore  # noqa: PLC0415 (an optional extra)

    return PostgresStore(dsn)


STORES: dict[str, StoreFactory] = {
    "memory": lambda request, tmp_path: MemoryStore(),
    "sqlite-file": lambda request, tmp_path: SQLiteStore(tmp_path / "store.db"),
    "sqlite-memory": lambda request, tmp_path: SQLiteStore(":memory:"),
    "postgres": _postgres,
}

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
GUID = bytes(range(16))


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with STORES[request.param](request, tmp_path) as opened:
        yield opened


def sent(
    mid: str = "<s1@mail.example.com>",
    ref: str = "c1:p1",
    *,
    to: tuple[str, ...] = ("pat@prospect.example",),
    cc: tuple[str, ...] = (),
    sender: str = "rep@vendor.example",
    subject: str | None = "Quick question",
    sent_at: dt.datetime | None = T0,
    provider_thread_id: str | None = None,
    thread_index: bytes | None = None,
) -> SentMessage:
    return SentMessage(
        mid,
        ref,
        sender,
        to,
        cc,
        subject=subject,
        sent_at=sent_at,
        provider_thread_id=provider_thread_id,
        thread_index=thread_index,
    )


# --------------------------------------------------------------------------------------------
# SentMessage: normalised on construction
# --------------------------------------------------------------------------------------------


class TestSentMessage:
    def test_message_id_is_canonical_with_or_without_brackets(self) -> None:
        assert sent("<Ab.1@Mail.Example.COM>").message_id == "Ab.1@mail.example.com"
        assert sent("Ab.1@Mail.Example.COM").message_id == "Ab.1@mail.example.com"

    def test_a_quoted_left_part_round_trips(self) -> None:
        first = sent('<"a b"@Example.com>')
        assert first.message_id == '"a b"@example.com'
        assert sent(first.message_id) == first

    @pytest.mark.parametrize("bad", ["", "<>", "   ", "(a comment)"])
    def test_a_value_without_an_id_is_a_config_error(self, bad: str) -> None:
        with pytest.raises(ConfigError):
            sent(bad)

    def test_an_id_without_an_at_sign_is_kept_as_the_parser_reads_it(self) -> None:
        """Real mail has ``<foo>`` ids; the parser keeps them, so a send may carry one."""
        assert sent("<legacy-id.42>").message_id == "legacy-id.42"

    def test_addresses_are_reduced_to_their_address(self) -> None:
        message = SentMessage(
            "a@x.example",
            "r",
            Address("Rep", "rep@vendor.example"),
            ["Pat <pat@prospect.example>", Address("", "ann@prospect.example")],
            '"Ops, Revenue" <revops@prospect.example>, cfo@prospect.example',
        )
        assert message.sender == "rep@vendor.example"
        assert message.to == ("pat@prospect.example", "ann@prospect.example")
        assert message.cc == ("revops@prospect.example", "cfo@prospect.example")

    def test_a_single_str_for_to_is_a_header_value(self) -> None:
        assert SentMessage("a@x", "r", "s@x", "pat@y.example").to == ("pat@y.example",)

    @pytest.mark.parametrize("bad", ["", "a@x, b@y", "<>", "Ops", "@x", "a@"])
    def test_the_sender_must_be_one_address(self, bad: str) -> None:
        with pytest.raises(ConfigError):
            SentMessage("a@x", "r", bad, ())

    def test_recipients_must_be_addresses(self) -> None:
        """Unquoted "Ops, Revenue <x@y>" is two mailboxes, and "Ops" is not an address."""
        with pytest.raises(ConfigError):
            SentMessage("a@x", "r", "s@x", "Ops, Revenue <revops@prospect.example>")
        with pytest.raises(ConfigError):
            SentMessage("a@x", "r", "s@x", [Address("", "")])

    def test_sent_at_must_be_aware_and_is_kept_in_utc(self) -> None:
        with pytest.raises(ConfigError, match="aware"):
            sent(sent_at=dt.datetime(2026, 1, 1))
        paris = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        assert sent(sent_at=paris).sent_at == dt.datetime(2026, 1, 1, 11, tzinfo=UTC)
        assert sent(sent_at=paris).sent_at.tzinfo is UTC  # type: ignore[union-attr]

    @pytest.mark.parametrize("bad", [b"", b"x" * 15, b"x" * 22, "0123456789abcdef"])
    def test_thread_index_must_be_a_16_byte_guid(self, bad: bytes) -> None:
        with pytest.raises(ConfigError):
            sent(thread_index=bad)

    def test_thread_index_accepts_any_bytes_like(self) -> None:
        assert sent(thread_index=bytearray(GUID)).thread_index == GUID  # type: ignore[arg-type]

    def test_wrong_types_are_config_errors(self) -> None:
        with pytest.raises(ConfigError):
            sent(subject=b"bytes")  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            SentMessage("a@x", 42, "s@x", ())  # type: ignore[arg-type]

    def test_subject_key_is_normalised_and_casefolded(self) -> None:
        assert sent(subject="RE: AW: Quick  QUESTION").subject_key == "quick question"
        assert sent(subject="Re:").subject_key is None
        assert sent(subject=None).subject_key is None

    def test_values_are_frozen_hashable_and_pickle(self) -> None:
        message = sent(thread_index=GUID)
        assert hash(message) == hash(sent(thread_index=GUID))
        assert pickle.loads(pickle.dumps(message)) == message
        with pytest.raises(AttributeError):
            message.ref = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Sends and aliases
# --------------------------------------------------------------------------------------------


def test_a_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_a_recorded_send_round_trips_every_field(store: Store) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    original = sent(
        to=("pat@prospect.example", "ann@prospect.example"),
        cc=("cfo@prospect.example",),
        subject="Café ☕ — 15 min?",
        sent_at=dt.datetime(2026, 3, 2, 11, 30, 0, 123456, tzinfo=paris),
        provider_thread_id="18c2f0a1b2",
        thread_index=GUID,
    )
    store.record_sent(original)
    assert store.find_sent([original.message_id]) == {original.message_id: original}


def test_a_send_without_optional_fields_round_trips(store: Store) -> None:
    bare = SentMessage("bare@x.example", "", "rep@vendor.example", ())
    store.record_sent(bare)
    assert store.find_sent(["bare@x.example"])["bare@x.example"] == bare


def test_find_sent_accepts_ids_in_any_form_and_answers_with_the_callers_spelling(
    store: Store,
) -> None:
    store.record_sent(sent("<s1@Mail.Example.com>"))
    found = store.find_sent(["<s1@MAIL.example.com>", " s1@mail.example.com ", "other@x"])
    assert set(found) == {"<s1@MAIL.example.com>", " s1@mail.example.com "}
    assert {s.message_id for s in found.values()} == {"s1@mail.example.com"}


def test_the_left_part_of_an_id_is_case_sensitive(store: Store) -> None:
    store.record_sent(sent("<S1@mail.example.com>"))
    assert store.find_sent(["s1@mail.example.com"]) == {}


def test_find_sent_with_nothing_or_garbage_finds_nothing(store: Store) -> None:
    store.record_sent(sent())
    assert store.find_sent([]) == {}
    assert store.find_sent(["", "<>", "no-at", "(comment only)", "<<<@>>>"]) == {}


def test_find_sent_refuses_a_single_str(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.find_sent("s1@mail.example.com")


def test_find_sent_takes_any_iterable(store: Store) -> None:
    store.record_sent(sent())
    assert set(store.find_sent(iter(["s1@mail.example.com"]))) == {"s1@mail.example.com"}


def test_find_sent_answers_a_long_list_in_one_call(store: Store) -> None:
    """More ids than SQLite binds in one statement: chunked, nothing lost."""
    wanted = [f"s{i}@mail.example.com" for i in range(0, 3000, 997)]
    for mid in wanted:
        store.record_sent(sent(mid))
    ids = [f"s{i}@mail.example.com" for i in range(3000)]
    found = store.find_sent(ids)
    assert sorted(found) == sorted(wanted)
    assert all(found[m].message_id == m for m in wanted)


def test_recording_a_send_again_replaces_it_and_keeps_its_aliases(store: Store) -> None:
    store.record_sent(sent(provider_thread_id=None))
    store.record_alias("s1@mail.example.com", "graph-1@outlook.example")
    updated = sent(provider_thread_id="conv-1", subject="Changed")
    store.record_sent(updated)
    assert store.find_sent(["graph-1@outlook.example"]) == {"graph-1@outlook.example": updated}
    assert store.find_sent_by_provider_thread("conv-1") == updated


def test_replacing_a_send_moves_it_in_every_index(store: Store) -> None:
    store.record_sent(
        sent(ref="old", provider_thread_id="t-old", thread_index=GUID, subject="Old subject")
    )
    store.record_sent(sent(ref="new", provider_thread_id="t-new", subject="New subject"))
    assert store.find_sent_by_ref("old") is None
    assert store.find_sent_by_provider_thread("t-old") is None
    assert store.find_sent_by_thread_index(GUID) is None
    assert store.find_sent_by_subject("Old subject", ["pat@prospect.example"]) == []
    assert store.find_sent_by_ref("new") is not None
    assert len(store.find_sent_by_subject("new subject", ["pat@prospect.example"])) == 1


def test_an_alias_finds_the_send(store: Store) -> None:
    original = sent()
    store.record_sent(original)
    store.record_alias("<s1@mail.example.com>", "<AAMk-graph@EUR.prod.outlook.com>")
    assert store.find_sent(["AAMk-graph@eur.prod.outlook.com"]) == {
        "AAMk-graph@eur.prod.outlook.com": original
    }


def test_one_lookup_may_hit_a_send_by_its_id_and_its_alias(store: Store) -> None:
    store.record_sent(sent())
    store.record_alias("s1@mail.example.com", "alias@x.example")
    found = store.find_sent(["s1@mail.example.com", "alias@x.example"])
    assert found["s1@mail.example.com"] == found["alias@x.example"]


def test_an_alias_may_be_recorded_through_another_alias(store: Store) -> None:
    store.record_sent(sent())
    store.record_alias("s1@mail.example.com", "a1@x.example")
    store.record_alias("a1@x.example", "a2@x.example")
    assert store.find_sent(["a2@x.example"])["a2@x.example"].message_id == "s1@mail.example.com"


def test_recording_an_alias_again_is_a_no_op(store: Store) -> None:
    store.record_sent(sent())
    store.record_alias("s1@mail.example.com", "a1@x.example")
    store.record_alias("s1@mail.example.com", "<a1@X.example>")
    store.record_alias("s1@mail.example.com", "s1@mail.example.com")
    assert len(store.find_sent(["a1@x.example"])) == 1


def test_an_alias_of_an_unknown_send_is_a_config_error(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.record_alias("nobody@x.example", "a1@x.example")


def test_an_id_names_at_most_one_send(store: Store) -> None:
    store.record_sent(sent("s1@x.example"))
    store.record_sent(sent("s2@x.example"))
    store.record_alias("s1@x.example", "a1@x.example")
    with pytest.raises(ConfigError):
        store.record_alias("s2@x.example", "a1@x.example")
    with pytest.raises(ConfigError):
        store.record_alias("s2@x.example", "s1@x.example")
    with pytest.raises(ConfigError):
        store.record_sent(sent("a1@x.example"))
    assert store.find_sent(["a1@x.example"])["a1@x.example"].message_id == "s1@x.example"


def test_record_sent_refuses_anything_but_a_sent_message(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.record_sent({"message_id": "x@y"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The single-send lookups: newest first
# --------------------------------------------------------------------------------------------


def test_find_sent_by_ref_returns_the_newest_send(store: Store) -> None:
    store.record_sent(sent("a@x.example", "r", sent_at=T0 + dt.timedelta(hours=2)))
    store.record_sent(sent("b@x.example", "r", sent_at=T0))
    store.record_sent(sent("c@x.example", "r", sent_at=None))
    store.record_sent(sent("d@x.example", "other", sent_at=T0 + dt.timedelta(days=9)))
    assert store.find_sent_by_ref("r").message_id == "a@x.example"  # type: ignore[union-attr]
    assert store.find_sent_by_ref("missing") is None


def test_ties_and_missing_times_go_to_the_send_recorded_last(store: Store) -> None:
    store.record_sent(sent("a@x.example", "untimed", sent_at=None))
    store.record_sent(sent("b@x.example", "untimed", sent_at=None))
    store.record_sent(sent("c@x.example", "same", sent_at=T0))
    store.record_sent(sent("d@x.example", "same", sent_at=T0))
    assert store.find_sent_by_ref("untimed").message_id == "b@x.example"  # type: ignore[union-attr]
    assert store.find_sent_by_ref("same").message_id == "d@x.example"  # type: ignore[union-attr]


def test_replacing_a_send_keeps_its_place_in_the_recording_order(store: Store) -> None:
    store.record_sent(sent("a@x.example", "r", sent_at=None))
    store.record_sent(sent("b@x.example", "r", sent_at=None))
    store.record_sent(sent("a@x.example", "r", sent_at=None, subject="re-recorded"))
    assert store.find_sent_by_ref("r").message_id == "b@x.example"  # type: ignore[union-attr]


def test_find_sent_by_provider_thread(store: Store) -> None:
    store.record_sent(sent("a@x.example", provider_thread_id="thr-1", sent_at=T0))
    store.record_sent(
        sent("b@x.example", provider_thread_id="thr-1", sent_at=T0 + dt.timedelta(days=3))
    )
    store.record_sent(sent("c@x.example"))
    found = store.find_sent_by_provider_thread("thr-1")
    assert found is not None
    assert found.message_id == "b@x.example"
    assert store.find_sent_by_provider_thread("thr-2") is None


def test_find_sent_by_thread_index(store: Store) -> None:
    store.record_sent(sent("a@x.example", thread_index=GUID))
    store.record_sent(sent("b@x.example", thread_index=bytes(16)))
    found = store.find_sent_by_thread_index(GUID)
    assert found is not None
    assert found.message_id == "a@x.example"
    assert store.find_sent_by_thread_index(b"\xff" * 16) is None


def test_single_send_lookups_refuse_keys_of_the_wrong_type(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.find_sent_by_ref(["r"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        store.find_sent_by_provider_thread(7)  # type: ignore[arg-type]


def test_find_sent_by_thread_index_refuses_a_guid_of_the_wrong_size(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.find_sent_by_thread_index(GUID[:15])


# --------------------------------------------------------------------------------------------
# Subject + participants (the low-confidence heuristic)
# --------------------------------------------------------------------------------------------


def test_subject_lookup_normalises_the_subject_and_any_party_matches(store: Store) -> None:
    original = sent(cc=("cfo@prospect.example",), subject="Quick question")
    store.record_sent(original)
    for party in ("PAT@prospect.example", "cfo@PROSPECT.example", "rep@vendor.example"):
        assert store.find_sent_by_subject("RE: AW: quick QUESTION", [party]) == [original]
    assert store.find_sent_by_subject("Re: Quick question", [Address("P", "pat@prospect.example")])


def test_subject_lookup_needs_a_party_of_the_send(store: Store) -> None:
    store.record_sent(sent())
    assert store.find_sent_by_subject("Quick question", ["stranger@else.example"]) == []
    assert store.find_sent_by_subject("Quick question", []) == []


def test_subject_lookup_needs_the_same_subject(store: Store) -> None:
    store.record_sent(sent(subject="Quick question"))
    store.record_sent(sent("n@x.example", subject=None))
    assert store.find_sent_by_subject("Another question", ["pat@prospect.example"]) == []
    assert store.find_sent_by_subject("Re:", ["pat@prospect.example"]) == []


def test_subject_lookup_compares_idna_domains_in_ascii(store: Store) -> None:
    store.record_sent(sent(to=("ann@bücher.example",)))
    assert store.find_sent_by_subject("Quick question", ["ANN@xn--bcher-kva.example"])


def test_subject_lookup_honours_since_and_drops_untimed_sends_then(store: Store) -> None:
    store.record_sent(sent("old@x.example", sent_at=T0 - dt.timedelta(days=40)))
    store.record_sent(sent("new@x.example", sent_at=T0))
    store.record_sent(sent("untimed@x.example", sent_at=None))
    since = T0 - dt.timedelta(days=30)
    found = store.find_sent_by_subject("Quick question", ["pat@prospect.example"], since)
    assert [s.message_id for s in found] == ["new@x.example"]
    everything = store.find_sent_by_subject("Quick question", ["pat@prospect.example"])
    assert [s.message_id for s in everything] == [
        "new@x.example",
        "old@x.example",
        "untimed@x.example",
    ]


def test_subject_lookup_is_newest_first_limited_and_without_duplicates(store: Store) -> None:
    for i in range(6):
        store.record_sent(
            sent(
                f"s{i}@x.example",
                to=("pat@prospect.example", "ann@prospect.example"),
                sent_at=T0 + dt.timedelta(minutes=i),
            )
        )
    parties = ["pat@prospect.example", "ann@prospect.example", "rep@vendor.example"]
    found = store.find_sent_by_subject("quick question", parties, limit=4)
    assert [s.message_id for s in found] == [f"s{i}@x.example" for i in (5, 4, 3, 2)]
    assert len(store.find_sent_by_subject("quick question", parties)) == 6


def test_subject_lookup_refuses_bad_arguments(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.find_sent_by_subject("x", "pat@prospect.example")
    with pytest.raises(ConfigError):
        store.find_sent_by_subject("x", [], limit=0)
    with pytest.raises(ConfigError):
        store.find_sent_by_subject("x", [], dt.datetime(2026, 1, 1))


# --------------------------------------------------------------------------------------------
# Incoming messages tied to a send
# --------------------------------------------------------------------------------------------


def test_an_incoming_message_tied_to_a_send_finds_it(store: Store) -> None:
    original = sent()
    store.record_sent(original)
    store.record_incoming("<reply-1@prospect.example>", "<s1@mail.example.com>")
    assert store.find_incoming(["reply-1@prospect.example", "x@y"]) == {
        "reply-1@prospect.example": original
    }
    assert store.find_sent(["reply-1@prospect.example"]) == {}


def test_an_incoming_message_may_be_tied_through_an_alias(store: Store) -> None:
    store.record_sent(sent())
    store.record_alias("s1@mail.example.com", "alias@x.example")
    store.record_incoming("reply-1@prospect.example", "alias@x.example")
    assert store.find_incoming(["<reply-1@PROSPECT.example>"])[
        "<reply-1@PROSPECT.example>"
    ].message_id == ("s1@mail.example.com")


def test_the_first_tie_of_an_incoming_message_wins(store: Store) -> None:
    store.record_sent(sent("s1@x.example"))
    store.record_sent(sent("s2@x.example"))
    store.record_incoming("reply@p.example", "s1@x.example")
    store.record_incoming("reply@p.example", "s2@x.example")
    assert store.find_incoming(["reply@p.example"])["reply@p.example"].message_id == "s1@x.example"


def test_tying_to_an_unknown_send_is_a_config_error(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.record_incoming("reply@p.example", "nobody@x.example")


def test_find_incoming_answers_a_long_list(store: Store) -> None:
    store.record_sent(sent())
    store.record_incoming("r1200@p.example", "s1@mail.example.com")
    found = store.find_incoming(f"r{i}@p.example" for i in range(2000))
    assert list(found) == ["r1200@p.example"]


# --------------------------------------------------------------------------------------------
# The processed ledger
# --------------------------------------------------------------------------------------------


def test_the_ledger_remembers_processed_keys(store: Store) -> None:
    assert not store.is_processed("reply-1@prospect.example")
    with store.transaction() as tx:
        assert tx.mark_processed("reply-1@prospect.example", T0) is True
        assert tx.mark_processed("reply-1@prospect.example", T0) is False
    with store.transaction() as tx:
        assert tx.mark_processed("reply-1@prospect.example", T0) is False
    assert store.is_processed("reply-1@prospect.example")
    assert not store.is_processed("sha256:" + "0" * 64)


def test_find_processed_answers_for_many_keys_at_once(store: Store) -> None:
    keys = [f"reply-{n}@prospect.example" for n in range(1500)]  # more than one chunk
    with store.transaction() as tx:
        for key in keys[::3]:
            tx.mark_processed(key, T0)
    assert store.find_processed([*keys, "Reply-0@Prospect.example", keys[0]]) == set(keys[::3])
    assert store.find_processed([]) == set()
    with pytest.raises(ConfigError):
        store.find_processed(["ok", ""])


def test_ledger_keys_are_opaque_and_exact(store: Store) -> None:
    with store.transaction() as tx:
        tx.mark_processed("Reply-1@Prospect.example", T0)
    assert not store.is_processed("reply-1@prospect.example")


def test_ledger_refuses_empty_keys_and_naive_times(store: Store) -> None:
    with pytest.raises(ConfigError), store.transaction() as tx:
        tx.mark_processed("", T0)
    with pytest.raises(ConfigError), store.transaction() as tx:
        tx.mark_processed("k", dt.datetime(2026, 1, 1))
    assert not store.is_processed("k")


# --------------------------------------------------------------------------------------------
# The outbox
# --------------------------------------------------------------------------------------------


def enqueue(store: Store, event_id: str, hook: str = "crm_log", now: dt.datetime = T0) -> int:
    with store.transaction() as tx:
        entry_id = tx.enqueue(event_id, hook, b'{"event": "%s"}' % event_id.encode(), now)
    assert entry_id is not None
    return entry_id


def test_an_enqueued_entry_is_due_at_once(store: Store) -> None:
    entry_id = enqueue(store, "ev-1")
    (entry,) = store.due_outbox(T0)
    assert entry == OutboxEntry(
        entry_id=entry_id,
        event_id="ev-1",
        hook="crm_log",
        payload=b'{"event": "ev-1"}',
        state=OutboxState.PENDING,
        attempts=0,
        created_at=T0,
        next_attempt_at=T0,
        last_error=None,
        finished_at=None,
    )
    assert store.due_outbox(T0 - dt.timedelta(seconds=1)) == []


def test_enqueueing_the_same_event_and_hook_twice_is_a_no_op(store: Store) -> None:
    first = enqueue(store, "ev-1", "crm_log")
    other_hook = enqueue(store, "ev-1", "campaign_stop")
    with store.transaction() as tx:
        assert tx.enqueue("ev-1", "crm_log", b"different", T0) is None
    store.mark_delivered(first, T0)
    with store.transaction() as tx:
        assert tx.enqueue("ev-1", "crm_log", b"again", T0) is None
    assert first != other_hook
    entries = store.find_outbox("ev-1")
    assert [(e.entry_id, e.hook) for e in entries] == [
        (first, "crm_log"),
        (other_hook, "campaign_stop"),
    ]
    assert entries[0].payload == b'{"event": "ev-1"}'
    # A duplicate neither spoils the transaction it is in nor uses up an entry id.
    with store.transaction() as tx:
        assert tx.enqueue("ev-1", "campaign_stop", b"again", T0) is None
        assert tx.enqueue("ev-2", "crm_log", b'{"event": "ev-2"}', T0) == other_hook + 1
    assert [e.payload for e in store.find_outbox("ev-2")] == [b'{"event": "ev-2"}']


def test_entry_ids_grow_and_are_never_reused(store: Store) -> None:
    ids = [enqueue(store, f"ev-{i}") for i in range(5)]
    assert ids == sorted(set(ids))


def test_due_entries_come_longest_due_first_within_the_limit(store: Store) -> None:
    late = enqueue(store, "late", now=T0 + dt.timedelta(minutes=5))
    early = enqueue(store, "early", now=T0)
    middle = enqueue(store, "middle", now=T0 + dt.timedelta(minutes=1))
    later = T0 + dt.timedelta(hours=1)
    assert [e.entry_id for e in store.due_outbox(later)] == [early, middle, late]
    assert [e.entry_id for e in store.due_outbox(later, limit=2)] == [early, middle]


def test_a_failed_attempt_counts_and_reschedules(store: Store) -> None:
    entry_id = enqueue(store, "ev-1")
    retry_at = T0 + dt.timedelta(minutes=2)
    store.mark_failed(entry_id, "ConnectionError: CRM down", retry_at)
    assert store.due_outbox(T0 + dt.timedelta(minutes=1)) == []
    (entry,) = store.due_outbox(retry_at)
    assert (entry.state, entry.attempts, entry.next_attempt_at, entry.last_error) == (
        OutboxState.PENDING,
        1,
        retry_at,
        "ConnectionError: CRM down",
    )
    store.mark_failed(entry_id, "again", retry_at + dt.timedelta(minutes=4))
    assert store.find_outbox("ev-1")[0].attempts == 2


def test_a_delivered_entry_is_no_longer_due(store: Store) -> None:
    entry_id = enqueue(store, "ev-1")
    done = T0 + dt.timedelta(seconds=3)
    store.mark_delivered(entry_id, done)
    store.mark_delivered(entry_id, done + dt.timedelta(hours=1))
    assert store.due_outbox(T0 + dt.timedelta(days=1)) == []
    (entry,) = store.find_outbox("ev-1")
    assert (entry.state, entry.next_attempt_at, entry.finished_at) == (
        OutboxState.DELIVERED,
        None,
        done,
    )


def test_late_failures_do_not_reopen_a_finished_entry(store: Store) -> None:
    entry_id = enqueue(store, "ev-1")
    store.mark_delivered(entry_id, T0)
    store.mark_failed(entry_id, "late", T0 + dt.timedelta(minutes=1))
    store.mark_dead(entry_id, "late", T0)
    (entry,) = store.find_outbox("ev-1")
    assert (entry.state, entry.attempts, entry.last_error) == (OutboxState.DELIVERED, 0, None)


def test_a_dead_entry_is_parked_and_listed(store: Store) -> None:
    first = enqueue(store, "ev-1")
    second = enqueue(store, "ev-2")
    enqueue(store, "ev-3")
    store.mark_failed(second, "boom", T0)
    store.mark_dead(second, "boom for good", T0 + dt.timedelta(hours=1))
    store.mark_dead(first, "bad payload", T0)
    assert [e.entry_id for e in store.dead_outbox()] == [first, second]
    assert [e.entry_id for e in store.dead_outbox(limit=1)] == [first]
    dead = store.dead_outbox()[1]
    assert (dead.state, dead.attempts, dead.last_error, dead.finished_at) == (
        OutboxState.DEAD,
        2,
        "boom for good",
        T0 + dt.timedelta(hours=1),
    )
    assert [e.event_id for e in store.due_outbox(T0 + dt.timedelta(days=1))] == ["ev-3"]


def test_a_dead_entry_delivered_after_all_becomes_delivered(store: Store) -> None:
    entry_id = enqueue(store, "ev-1")
    store.mark_dead(entry_id, "gave up", T0)
    store.mark_delivered(entry_id, T0 + dt.timedelta(days=1))
    assert store.dead_outbox() == []
    assert store.find_outbox("ev-1")[0].state is OutboxState.DELIVERED


def test_marking_an_unknown_entry_is_a_config_error(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.mark_delivered(424242, T0)
    with pytest.raises(ConfigError):
        store.mark_failed(424242, "x", T0)
    with pytest.raises(ConfigError):
        store.mark_dead(424242, "x", T0)


def test_the_outbox_refuses_text_payloads_and_naive_times(store: Store) -> None:
    with pytest.raises(ConfigError), store.transaction() as tx:
        tx.enqueue("ev", "crm_log", '{"json": "as str"}', T0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        store.due_outbox(dt.datetime(2026, 1, 1))
    assert store.find_outbox("ev") == []


def test_find_outbox_of_an_unknown_event_is_empty(store: Store) -> None:
    assert store.find_outbox("nope") == []


def test_an_entry_may_be_enqueued_due_later(store: Store) -> None:
    later = T0 + dt.timedelta(minutes=5)
    with store.transaction() as tx:
        entry_id = tx.enqueue("ev-1", "crm_log", b"{}", T0, due_at=later)
    assert store.due_outbox(later - dt.timedelta(microseconds=1)) == []
    (entry,) = store.due_outbox(later)
    assert (entry.entry_id, entry.created_at, entry.next_attempt_at) == (entry_id, T0, later)


# --------------------------------------------------------------------------------------------
# Work sharing: outbox claims and source leases
# --------------------------------------------------------------------------------------------

LEASE = dt.timedelta(minutes=5)


def test_a_claim_takes_due_entries_until_it_runs_out(store: Store) -> None:
    first, second = enqueue(store, "ev-1"), enqueue(store, "ev-2", now=T0 + dt.timedelta(1))
    claimed = store.claim_outbox(T0, T0 + LEASE)
    assert [e.entry_id for e in claimed] == [first]
    assert claimed[0].next_attempt_at == T0  # as it was when claimed
    assert claimed[0].attempts == 0
    assert store.claim_outbox(T0, T0 + LEASE) == []  # taken: nobody else gets it
    assert store.due_outbox(T0 + LEASE - dt.timedelta(microseconds=1)) == []
    (again,) = store.claim_outbox(T0 + LEASE, T0 + 2 * LEASE)  # the claimant died
    assert again.entry_id == first
    store.mark_delivered(first, T0 + LEASE)
    later = T0 + dt.timedelta(days=2)
    assert [e.entry_id for e in store.claim_outbox(later, later + LEASE)] == [second]


def test_a_claim_respects_the_limit_and_the_order(store: Store) -> None:
    ids = [enqueue(store, f"ev-{n}", now=T0 + dt.timedelta(seconds=10 - n)) for n in range(5)]
    later = T0 + dt.timedelta(minutes=1)
    first = store.claim_outbox(later, later + LEASE, limit=2)
    assert [e.entry_id for e in first] == [ids[4], ids[3]]  # longest due first
    rest = store.claim_outbox(later, later + LEASE, limit=10)
    assert [e.entry_id for e in rest] == [ids[2], ids[1], ids[0]]


def test_a_claimed_entry_failing_is_due_at_its_retry_time(store: Store) -> None:
    entry_id = enqueue(store, "ev-1")
    store.claim_outbox(T0, T0 + LEASE)
    retry_at = T0 + dt.timedelta(seconds=30)
    store.mark_failed(entry_id, "CRM down", retry_at)
    (entry,) = store.claim_outbox(retry_at, retry_at + LEASE)
    assert (entry.entry_id, entry.attempts) == (entry_id, 1)


def test_concurrent_claims_never_share_an_entry(store: Store) -> None:
    for n in range(60):
        enqueue(store, f"ev-{n}")
    got: list[list[int]] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claim() -> None:
        start.wait()
        mine: list[int] = []
        while batch := store.claim_outbox(T0, T0 + LEASE, limit=3):
            mine += [e.entry_id for e in batch]
        with lock:
            got.append(mine)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for mine in got for i in mine]
    assert len(every) == len(set(every)) == 60


def test_claims_refuse_a_lease_that_does_not_end_later(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.claim_outbox(T0, T0)
    with pytest.raises(ConfigError):
        store.claim_source("inbox", "w1", T0, T0 - LEASE)
    with pytest.raises(ConfigError):
        store.claim_source("inbox", "w1", dt.datetime(2026, 1, 1), T0)
    with pytest.raises(ConfigError):
        store.claim_source("inbox", "", T0, T0 + LEASE)


def test_work_sharing_calls_refuse_to_run_inside_a_transaction(store: Store) -> None:
    with store.transaction():
        for call in (
            lambda: store.claim_outbox(T0, T0 + LEASE),
            lambda: store.claim_source("inbox", "w1", T0, T0 + LEASE),
            lambda: store.release_source("inbox", "w1"),
            lambda: store.prune(T0),
        ):
            with pytest.raises(ConfigError):
                call()


def test_a_source_lease_is_exclusive_renewable_and_expires(store: Store) -> None:
    assert store.claim_source("inbox", "w1", T0, T0 + LEASE)
    assert not store.claim_source("inbox", "w2", T0 + dt.timedelta(minutes=1), T0 + 2 * LEASE)
    assert store.claim_source("inbox", "w1", T0 + dt.timedelta(minutes=4), T0 + 2 * LEASE)
    assert not store.claim_source("inbox", "w2", T0 + LEASE, T0 + 3 * LEASE)  # renewed
    assert store.claim_source("inbox", "w2", T0 + 2 * LEASE, T0 + 3 * LEASE)  # w1 died
    assert store.claim_source("other", "w1", T0, T0 + LEASE)  # per source


def test_a_released_source_is_free_and_only_the_holder_releases(store: Store) -> None:
    assert store.claim_source("inbox", "w1", T0, T0 + LEASE)
    store.release_source("inbox", "w2")  # not its lease: nothing happens
    assert not store.claim_source("inbox", "w2", T0, T0 + LEASE)
    store.release_source("inbox", "w1")
    store.release_source("inbox", "w1")  # twice is fine
    assert store.claim_source("inbox", "w2", T0, T0 + LEASE)
    store.release_source("never-claimed", "w1")


def test_concurrent_claims_of_a_free_source_have_one_winner(store: Store) -> None:
    start = threading.Barrier(6)
    won: list[str] = []

    def claim(worker: str) -> None:
        start.wait()
        if store.claim_source("inbox", worker, T0, T0 + LEASE):
            won.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


# --------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------


def test_prune_deletes_old_ledger_keys_and_delivered_entries_only(store: Store) -> None:
    store.record_sent(sent())
    with store.transaction() as tx:
        tx.mark_processed("old", T0)
        tx.mark_processed("new", T0 + dt.timedelta(days=40))
        tx.record_incoming("reply@p.example", "s1@mail.example.com")
    delivered, dead, pending = (enqueue(store, f"ev-{n}") for n in range(3))
    store.mark_delivered(delivered, T0)
    store.mark_dead(dead, "gave up", T0)
    store.save_cursor("inbox", "c")
    store.claim_source("inbox", "w1", T0, T0 + LEASE)

    pruned = store.prune(T0 + dt.timedelta(days=30))
    assert (pruned.ledger, pruned.outbox) == (1, 1)
    assert not store.is_processed("old")
    assert store.is_processed("new")
    assert store.find_outbox("ev-0") == []
    assert [e.entry_id for e in store.dead_outbox()] == [dead]
    assert [e.entry_id for e in store.due_outbox(T0)] == [pending]
    assert store.find_sent(["s1@mail.example.com"])
    assert store.find_incoming(["reply@p.example"])
    assert store.load_cursor("inbox") == "c"
    assert not store.claim_source("inbox", "w2", T0, T0 + LEASE)
    assert store.prune(T0 + dt.timedelta(days=30)) == Pruned(0, 0)
    with pytest.raises(ConfigError):
        store.prune(dt.datetime(2026, 1, 1))


def test_a_pruned_event_may_be_enqueued_again(store: Store) -> None:
    store.mark_delivered(enqueue(store, "ev-1"), T0)
    store.prune(T0 + dt.timedelta(days=1))
    assert enqueue(store, "ev-1") is not None


# --------------------------------------------------------------------------------------------
# Cursors
# --------------------------------------------------------------------------------------------


def test_cursors_are_saved_per_source(store: Store) -> None:
    assert store.load_cursor("imap:rep@vendor.example/INBOX") is None
    store.save_cursor("imap:rep@vendor.example/INBOX", "1700000000:42")
    store.save_cursor("gmail:rep", "")
    store.save_cursor("imap:rep@vendor.example/INBOX", "1700000000:57")
    assert store.load_cursor("imap:rep@vendor.example/INBOX") == "1700000000:57"
    assert store.load_cursor("gmail:rep") == ""


# --------------------------------------------------------------------------------------------
# Transactions: all or nothing
# --------------------------------------------------------------------------------------------


def test_a_transaction_commits_ledger_outbox_and_cursor_together(store: Store) -> None:
    store.record_sent(sent())
    with store.transaction() as tx:
        tx.mark_processed("reply-1@p.example", T0)
        tx.record_incoming("reply-1@p.example", "s1@mail.example.com")
        tx.enqueue("ev-1", "crm_log", b"{}", T0)
        tx.enqueue("ev-1", "campaign_stop", b"{}", T0)
        tx.save_cursor("maildir:/var/mail/rep", "cur:17")
    assert store.is_processed("reply-1@p.example")
    assert store.find_incoming(["reply-1@p.example"])
    assert len(store.due_outbox(T0)) == 2
    assert store.load_cursor("maildir:/var/mail/rep") == "cur:17"


def test_an_exception_in_the_block_writes_nothing(store: Store) -> None:
    store.record_sent(sent())
    store.save_cursor("src", "before")
    kept = enqueue(store, "kept")
    with pytest.raises(RuntimeError, match="crash"), store.transaction() as tx:  # noqa: PT012 (the block is the transaction under test)
        tx.record_sent(sent("s2@x.example", "c2", thread_index=GUID))
        tx.record_alias("s1@mail.example.com", "alias@x.example")
        tx.mark_processed("reply-1@p.example", T0)
        tx.record_incoming("reply-1@p.example", "s1@mail.example.com")
        tx.enqueue("ev-1", "crm_log", b"{}", T0)
        tx.mark_delivered(kept, T0)
        tx.save_cursor("src", "after")
        raise RuntimeError("crash")
    assert store.find_sent(["s2@x.example", "alias@x.example"]) == {}
    assert store.find_sent_by_ref("c2") is None
    assert store.find_sent_by_thread_index(GUID) is None
    assert not store.is_processed("reply-1@p.example")
    assert store.find_incoming(["reply-1@p.example"]) == {}
    assert [e.event_id for e in store.due_outbox(T0)] == ["kept"]
    assert store.find_outbox("ev-1") == []
    assert store.load_cursor("src") == "before"


def test_a_failed_write_in_a_transaction_can_be_rolled_back_by_the_caller(store: Store) -> None:
    with pytest.raises(ConfigError), store.transaction() as tx:  # noqa: PT012 (the block is the transaction under test)
        tx.mark_processed("k", T0)
        tx.record_incoming("reply@p.example", "unknown@x.example")
    assert not store.is_processed("k")


def test_a_replacement_rolled_back_restores_the_old_send(store: Store) -> None:
    original = sent(provider_thread_id="t1", subject="Old")
    store.record_sent(original)
    with pytest.raises(RuntimeError), store.transaction() as tx:  # noqa: PT012 (the block is the transaction under test)
        tx.record_sent(sent(provider_thread_id="t2", subject="New"))
        raise RuntimeError
    assert store.find_sent_by_provider_thread("t1") == original
    assert store.find_sent_by_provider_thread("t2") is None
    assert store.find_sent_by_subject("old", ["pat@prospect.example"]) == [original]
    assert store.find_sent_by_subject("new", ["pat@prospect.example"]) == []


def test_the_transactions_thread_reads_its_own_writes(store: Store) -> None:
    with store.transaction() as tx:
        tx.record_sent(sent())
        tx.mark_processed("k", T0)
        assert store.find_sent(["s1@mail.example.com"])
        assert store.is_processed("k")


def test_transactions_do_not_nest(store: Store) -> None:
    with store.transaction(), pytest.raises(ConfigError), store.transaction():
        pass
    with store.transaction(), pytest.raises(ConfigError):
        store.record_sent(sent())
    store.record_sent(sent())  # the store is still usable


def test_a_transaction_is_unusable_after_its_block(store: Store) -> None:
    with store.transaction() as tx:
        pass
    with pytest.raises(ConfigError):
        tx.mark_processed("k", T0)
    with pytest.raises(ConfigError):
        tx.save_cursor("src", "c")


def test_transactions_from_many_threads_serialise(store: Store) -> None:
    """Every thread marks the same key: exactly one sees it new; all enqueue once."""
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            for i in range(20):
                with store.transaction() as tx:
                    fresh = tx.mark_processed("shared", T0)
                    tx.mark_processed(f"t{n}-{i}", T0)
                    tx.enqueue("ev-shared", "crm_log", b"{}", T0)
                    tx.enqueue(f"ev-{n}-{i}", "crm_log", b"{}", T0)
                with lock:
                    results.append(fresh)
                assert store.is_processed(f"t{n}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results.count(True) == 1
    assert len(results) == 80
    assert len(store.due_outbox(T0, limit=1000)) == 81


# --------------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------------


def test_a_closed_store_refuses_work_and_closing_twice_is_fine(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(ConfigError):
        store.find_sent(["a@b"])
    with pytest.raises(ConfigError):
        store.is_processed("k")
    with pytest.raises(ConfigError), store.transaction():
        pass
    with pytest.raises(ConfigError), store:
        pass
