"""The correlator: every method and role, on the situations sales mail actually produces."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from replytrack import (
    Classification,
    Kind,
    MessageIdGenerator,
    ThreadIndex,
    classify,
    parse_headers,
)
from replytrack.correlate import Correlator, MatchMethod, Role
from replytrack.errors import ConfigError
from replytrack.store import MemoryStore, SentMessage, SQLiteStore, Store
from replytrack.testing import build_bounce, build_out_of_office, build_reply

SENT_AT = dt.datetime(2027, 2, 26, 9, 0, tzinfo=dt.timezone.utc)
SEND_ID = "send-1@mail.sales.example"
REP = "rep@sales.example"
JO = "jo@customer.example"  # the prospect, on To
SAM = "sam@customer.example"  # Jo's colleague, on Cc
KIM = "kim@customer.example"  # never mailed: Jo forwarded to her
GUID = bytes(range(16))


def _send(**overrides: object) -> SentMessage:
    fields: dict[str, object] = {
        "message_id": f"<{SEND_ID}>",
        "ref": "c42:p7",
        "sender": REP,
        "to": (JO,),
        "cc": (SAM,),
        "subject": "Quick question",
        "sent_at": SENT_AT,
    }
    fields.update(overrides)
    return SentMessage(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    with backend:
        backend.record_sent(_send())
        yield backend


@pytest.fixture
def correlator(store: Store) -> Correlator:
    return Correlator(store, own_addresses=[REP])


# -- who answered does not decide whether it matches -----------------------------------------


def test_a_reply_from_the_prospect_matches_by_in_reply_to(correlator: Correlator) -> None:
    m = correlator.correlate(build_reply(in_reply_to=f"<{SEND_ID}>", from_=f"Jo <{JO}>"))
    assert m is not None
    assert (m.ref, m.method, m.role) == ("c42:p7", MatchMethod.IN_REPLY_TO, Role.RECIPIENT)
    assert m.sent is not None
    assert m.sent.message_id == SEND_ID
    assert m.responder is not None
    assert m.responder.addr == JO
    assert m.classification.kind is Kind.REPLY
    assert m.matched_id == SEND_ID


def test_a_reply_from_another_address_matches_with_role_other(correlator: Correlator) -> None:
    reply = build_reply(in_reply_to=f"<{SEND_ID}>", from_="Jo (phone) <jo.private@gmail.example>")
    m = correlator.correlate(reply)
    assert m is not None
    assert (m.method, m.role) == (MatchMethod.IN_REPLY_TO, Role.OTHER)


def test_a_reply_from_the_cc_colleague_matches_with_role_cc(correlator: Correlator) -> None:
    m = correlator.correlate(build_reply(in_reply_to=f"<{SEND_ID}>", from_=f"Sam <{SAM}>"))
    assert m is not None
    assert (m.method, m.role) == (MatchMethod.IN_REPLY_TO, Role.CC)


def test_roles_compare_addresses_case_insensitively(correlator: Correlator) -> None:
    m = correlator.correlate(build_reply(in_reply_to=f"<{SEND_ID}>", from_="SAM@Customer.Example"))
    assert m is not None
    assert m.role is Role.CC


def test_reply_to_and_sender_do_not_override_from_for_the_role(correlator: Correlator) -> None:
    reply = build_reply(
        in_reply_to=f"<{SEND_ID}>",
        from_=f"Kim <{KIM}>",
        headers={"Reply-To": JO, "Sender": SAM},
    )
    m = correlator.correlate(reply)
    assert m is not None
    assert m.role is Role.OTHER


def test_forward_then_reply_from_the_third_person_matches_by_references(
    correlator: Correlator,
) -> None:
    """Jo forwards to Kim (we never see the forward); Kim answers everyone."""
    reply = build_reply(
        in_reply_to="<fwd-9@customer.example>",
        references=[f"<{SEND_ID}>", "<fwd-9@customer.example>"],
        from_=f"Kim <{KIM}>",
        subject="Re: Fwd: Quick question",
    )
    m = correlator.correlate(reply)
    assert m is not None
    assert (m.method, m.role, m.matched_id) == (MatchMethod.REFERENCES, Role.OTHER, SEND_ID)


# -- header shapes -----------------------------------------------------------------------------


def test_in_reply_to_with_prose_still_matches(correlator: Correlator) -> None:
    reply = build_reply(
        in_reply_to=None,
        headers={"In-Reply-To": f'<{SEND_ID}> (Rep\'s message of "Fri, 26 Feb 2027")'},
    )
    m = correlator.correlate(reply)
    assert m is not None
    assert m.method is MatchMethod.IN_REPLY_TO


def test_an_id_in_another_case_and_brackets_style_matches(correlator: Correlator) -> None:
    m = correlator.correlate(build_reply(in_reply_to="<send-1@MAIL.Sales.Example>"))
    assert m is not None
    assert m.method is MatchMethod.IN_REPLY_TO


def test_references_are_tried_newest_first(store: Store, correlator: Correlator) -> None:
    store.record_sent(_send(message_id="<send-2@mail.sales.example>", ref="c42:p7:s2"))
    reply = build_reply(
        in_reply_to="<unknown@customer.example>",
        references=[f"<{SEND_ID}>", "<send-2@mail.sales.example>", "<unknown@customer.example>"],
    )
    m = correlator.correlate(reply)
    assert m is not None
    assert (m.ref, m.method) == ("c42:p7:s2", MatchMethod.REFERENCES)


def test_a_reply_referencing_two_sends_matches_the_newest_and_says_so(
    store: Store, correlator: Correlator
) -> None:
    store.record_sent(_send(message_id="<other@mail.sales.example>", ref="c9:p1"))
    reply = build_reply(
        in_reply_to="<other@mail.sales.example>",
        references=[f"<{SEND_ID}>", "<other@mail.sales.example>"],
    )
    m = correlator.correlate(reply)
    assert m is not None
    assert m.ref == "c9:p1"
    assert any("2 different sends" in note for note in m.notes)


def test_an_alias_recorded_for_a_provider_id_matches(store: Store, correlator: Correlator) -> None:
    store.record_alias(f"<{SEND_ID}>", "<AM0PR01MB1234.graph@outlook.example>")
    m = correlator.correlate(build_reply(in_reply_to="<AM0PR01MB1234.graph@outlook.example>"))
    assert m is not None
    assert (m.ref, m.method) == ("c42:p7", MatchMethod.IN_REPLY_TO)


def test_truncated_references_match_through_an_earlier_reply(
    store: Store, correlator: Correlator
) -> None:
    """Sam answers Jo's reply; his client kept only In-Reply-To to Jo's message."""
    store.record_incoming("<jo-reply-1@customer.example>", f"<{SEND_ID}>")
    reply = build_reply(in_reply_to="<jo-reply-1@customer.example>", from_=f"Sam <{SAM}>")
    m = correlator.correlate(reply)
    assert m is not None
    assert (m.method, m.role, m.ref) == (MatchMethod.THREAD, Role.CC, "c42:p7")


def test_an_outlook_reply_without_references_matches_by_thread_index(store: Store) -> None:
    index = ThreadIndex.new(now=SENT_AT, guid=GUID)
    store.record_sent(_send(message_id="<outlook-send@mail.sales.example>", thread_index=GUID))
    reply = build_reply(
        in_reply_to=None,
        from_=f"Jo <{JO}>",
        headers={"Thread-Index": index.child(now=SENT_AT + dt.timedelta(hours=3)).encode()},
    )
    m = Correlator(store).correlate(reply)
    assert m is not None
    assert (m.method, m.role) == (MatchMethod.THREAD_INDEX, Role.RECIPIENT)


def test_a_provider_thread_id_is_a_hint_used_when_headers_fail(store: Store) -> None:
    store.record_sent(_send(message_id="<gm@mail.sales.example>", provider_thread_id="18c2f"))
    reply = build_reply(in_reply_to=None)
    correlator = Correlator(store)
    assert correlator.correlate(reply) is None
    m = correlator.correlate(reply, provider_thread_id="18c2f")
    assert m is not None
    assert m.method is MatchMethod.PROVIDER_THREAD


# -- signed tokens -----------------------------------------------------------------------------


def test_a_reply_arriving_before_the_store_knows_the_send_matches_by_token(store: Store) -> None:
    gen = MessageIdGenerator("mail.sales.example", secret=b"k" * 32)
    mid = gen.generate(ref="c77:p3")
    m = Correlator(store, generator=gen).correlate(build_reply(in_reply_to=mid))
    assert m is not None
    assert (m.ref, m.sent, m.method, m.role) == ("c77:p3", None, MatchMethod.TOKEN, Role.UNKNOWN)


def test_a_token_match_returns_the_stored_send_when_present(store: Store) -> None:
    gen = MessageIdGenerator("mail.sales.example", secret=b"k" * 32)
    mid = gen.generate(ref="c77:p3")
    store.record_sent(_send(message_id=mid, ref="c77:p3"))
    reply = build_reply(in_reply_to="<x@customer.example>", references=[mid], from_=SAM)
    m = Correlator(store, generator=gen).correlate(reply)
    assert m is not None
    assert m.sent is not None
    assert (m.method, m.role) == (MatchMethod.TOKEN, Role.CC)


def test_a_token_from_another_secret_does_not_match(store: Store) -> None:
    theirs = MessageIdGenerator("mail.sales.example", secret=b"t" * 32).generate(ref="c1")
    gen = MessageIdGenerator("mail.sales.example", secret=b"k" * 32)
    assert Correlator(store, generator=gen).correlate(build_reply(in_reply_to=theirs)) is None


# -- bounces and other kinds ------------------------------------------------------------------


def test_a_bounce_matches_by_the_original_message_id(correlator: Correlator) -> None:
    m = correlator.correlate(build_bounce(original_message_id=f"<{SEND_ID}>"))
    assert m is not None
    assert m.method is MatchMethod.BOUNCE_ORIGINAL
    assert m.classification.kind is Kind.BOUNCE
    assert m.responder is not None
    assert m.role is Role.OTHER


def test_an_out_of_office_matches_and_keeps_its_classification(correlator: Correlator) -> None:
    ooo = build_out_of_office(language="de", in_reply_to=f"<{SEND_ID}>", from_=f"Jo <{JO}>")
    m = correlator.correlate(ooo)
    assert m is not None
    assert m.classification.kind is Kind.OUT_OF_OFFICE
    assert m.role is Role.RECIPIENT


def test_a_given_classification_is_used_as_is(correlator: Correlator) -> None:
    reply = build_reply(in_reply_to=f"<{SEND_ID}>")
    given = classify(build_bounce())
    m = correlator.correlate(reply, classification=given)
    assert m is not None
    assert m.classification is given


# -- own mail and no match ----------------------------------------------------------------------


def test_the_reps_own_follow_up_in_the_thread_does_not_match(correlator: Correlator) -> None:
    follow_up = build_reply(in_reply_to=f"<{SEND_ID}>", from_=f"Rep <{REP}>", to=JO)
    assert correlator.correlate(follow_up) is None


def test_a_copy_of_our_own_send_does_not_match(store: Store) -> None:
    store.record_sent(_send(message_id="<send-2@mail.sales.example>", ref="s2"))
    copy = build_reply(
        message_id="<send-2@mail.sales.example>",
        in_reply_to=f"<{SEND_ID}>",
        from_="Rep via platform <noreply@platform.example>",
    )
    correlator = Correlator(store)
    assert correlator.correlate(copy) is None
    assert correlator.is_own_mail(parse_headers(copy)) == "Message-ID is a recorded send"


def test_our_signed_message_id_marks_own_mail(store: Store) -> None:
    gen = MessageIdGenerator("mail.sales.example", secret=b"k" * 32)
    ours = build_reply(message_id=gen.generate(ref="c1"), in_reply_to=f"<{SEND_ID}>", from_=JO)
    assert Correlator(store, generator=gen).correlate(ours) is None


def test_unrelated_mail_matches_nothing(correlator: Correlator) -> None:
    newsletter = build_reply(
        in_reply_to=None, from_="news@vendor.example", subject="Quick question"
    )
    assert correlator.correlate(newsletter) is None


# -- the low-confidence heuristic ---------------------------------------------------------------


def test_subject_and_participant_matching_is_off_by_default(correlator: Correlator) -> None:
    reply = build_reply(in_reply_to=None, from_=JO, subject="RE: Quick question")
    assert correlator.correlate(reply) is None


def test_subject_and_participant_matching_when_enabled_is_flagged(store: Store) -> None:
    correlator = Correlator(store, subject_window=dt.timedelta(days=30))
    reply = build_reply(
        in_reply_to=None,
        from_=JO,
        subject="AW: Quick question",
        date=SENT_AT + dt.timedelta(days=2),
    )
    m = correlator.correlate(reply)
    assert m is not None
    assert m.method is MatchMethod.SUBJECT_PARTICIPANTS
    assert m.method.low_confidence
    assert any("low confidence" in note for note in m.notes)
    too_late = build_reply(
        in_reply_to=None, from_=JO, subject="AW: Quick question", date=SENT_AT + dt.timedelta(60)
    )
    assert correlator.correlate(too_late) is None


def test_subject_matching_needs_a_participant_of_the_send(store: Store) -> None:
    correlator = Correlator(store, subject_window=dt.timedelta(days=30))
    stranger = build_reply(
        in_reply_to=None,
        from_="x@elsewhere.example",
        to="y@elsewhere.example",
        subject="Re: Quick question",
        date=SENT_AT + dt.timedelta(days=1),
    )
    assert correlator.correlate(stranger) is None


# -- cost ---------------------------------------------------------------------------------------


def test_unrelated_mail_is_not_classified(
    correlator: Correlator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Classifying reads the body; mail that matches nothing and is no report skips it."""
    calls: list[object] = []
    module = importlib.import_module("replytrack.correlate")

    def spy(data: Any, **kw: Any) -> Classification:
        calls.append(data)
        return classify(data, **kw)

    monkeypatch.setattr(module, "classify", spy)
    assert correlator.correlate(build_reply(in_reply_to="<elsewhere@x.example>")) is None
    assert calls == []
    assert correlator.correlate(build_bounce(original_message_id=f"<{SEND_ID}>")) is not None
    assert len(calls) == 1
    assert correlator.correlate(build_reply(in_reply_to=f"<{SEND_ID}>")) is not None
    assert len(calls) == 2


def test_the_sender_of_the_send_writing_in_its_thread_is_own_mail_without_configuration(
    store: Store,
) -> None:
    follow_up = build_reply(in_reply_to=f"<{SEND_ID}>", from_=f"Rep <{REP.upper()}>", to=JO)
    assert Correlator(store).correlate(follow_up) is None


def test_examine_says_why_own_mail_was_skipped(correlator: Correlator) -> None:
    own = build_reply(in_reply_to=f"<{SEND_ID}>", from_=f"Rep <{REP}>", to=JO)
    assert correlator.examine(own) == (None, "From is an own address")
    assert correlator.examine(build_reply(in_reply_to="<x@elsewhere.example>")) == (None, None)
    match, reason = correlator.examine(build_reply(in_reply_to=f"<{SEND_ID}>"))
    assert match is not None
    assert reason is None


# -- a batch's lookups at once ----------------------------------------------------------------


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.incoming_asked: list[str] = []

    def find_sent(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        self.calls += 1
        return super().find_sent(message_ids)

    def find_incoming(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        self.calls += 1
        ids = list(message_ids)
        self.incoming_asked += ids
        return super().find_incoming(ids)


def test_prefetched_correlates_a_batch_alike_in_two_store_calls() -> None:
    store = CountingStore()
    store.record_sent(_send())
    store.record_incoming("<jo-reply@customer.example>", SEND_ID)
    correlator = Correlator(store, own_addresses=[REP])
    mail = [
        build_reply(in_reply_to=f"<{SEND_ID}>", from_=JO),
        build_reply(in_reply_to="<jo-reply@customer.example>", from_=KIM),  # THREAD
        build_reply(in_reply_to="<unrelated@elsewhere.example>"),
        build_reply(in_reply_to=f"<{SEND_ID}>", from_=REP),  # own mail
    ]
    headers = [parse_headers(m) for m in mail]
    one_by_one = [correlator.examine(m, headers=h) for m, h in zip(mail, headers, strict=True)]
    store.calls = 0
    store.incoming_asked = []
    with correlator.prefetched(headers):
        batched = [correlator.examine(m, headers=h) for m, h in zip(mail, headers, strict=True)]
    # Earlier incoming messages only for the messages that reference no send, and never a
    # message's own id: the THREAD lookup examine would make.
    assert sorted(store.incoming_asked) == [
        "jo-reply@customer.example",
        "unrelated@elsewhere.example",
    ]
    assert batched == one_by_one
    assert [c.method if c else own for c, own in batched] == [
        MatchMethod.IN_REPLY_TO,
        MatchMethod.THREAD,
        None,
        "From is an own address",
    ]
    assert store.calls == 2


def test_note_incoming_lets_later_messages_of_the_block_match_by_thread() -> None:
    store = CountingStore()
    store.record_sent(_send())
    correlator = Correlator(store, own_addresses=[REP])
    first = build_reply(in_reply_to=f"<{SEND_ID}>", from_=JO, message_id="<jo@c.example>")
    second = build_reply(in_reply_to="<jo@c.example>", from_=KIM)
    headers = [parse_headers(first), parse_headers(second)]
    with correlator.prefetched(headers):
        tied, _ = correlator.examine(first, headers=headers[0])
        assert tied is not None
        assert tied.sent is not None
        assert correlator.examine(second, headers=headers[1])[0] is None  # not told yet
        correlator.note_incoming("jo@c.example", tied.sent)
        calls = store.calls
        thread, _ = correlator.examine(second, headers=headers[1])
        assert store.calls == calls  # answered from the block
    assert thread is not None
    assert (thread.method, thread.matched_id, thread.ref) == (
        MatchMethod.THREAD,
        "jo@c.example",
        tied.ref,
    )
    # Outside a block it does nothing: the store, which holds no tie, answers.
    correlator.note_incoming("jo@c.example", tied.sent)
    assert correlator.examine(second, headers=headers[1])[0] is None


def test_prefetched_blocks_do_not_nest_and_end_cleanly() -> None:
    correlator = Correlator(MemoryStore())
    with correlator.prefetched([]), pytest.raises(ConfigError), correlator.prefetched([]):
        pass
    with correlator.prefetched([]):  # the failed attempt left nothing behind
        pass
