"""The tracker end to end: stamping, processing, hooks, durability, polling."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from replytrack import Kind, MessageIdGenerator, SQLiteStore, ThreadIndex, parse_headers
from replytrack.correlate import MatchMethod, Role
from replytrack.errors import ConfigError
from replytrack.events import Action
from replytrack.testing import (
    CapturingHook,
    MemorySource,
    build_bounce,
    build_out_of_office,
    build_reply,
)
from replytrack.tracker import ReplyTracker

NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
REP = "rep@sales.example"
JO = "jo@customer.example"
SAM = "sam@customer.example"
KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "replytrack.db") as s:
        yield s


@pytest.fixture
def stop() -> CapturingHook:
    return CapturingHook()


@pytest.fixture
def crm() -> CapturingHook:
    return CapturingHook()


@pytest.fixture
def tracker(
    store: SQLiteStore, clock: Clock, stop: CapturingHook, crm: CapturingHook
) -> ReplyTracker:
    return ReplyTracker(
        store,
        MessageIdGenerator("mail.sales.example", secret=KEY),
        campaign_stop=stop,
        crm_log=crm,
        own_addresses=[REP],
        clock=clock,
        max_attempts=3,
    )


def outgoing(subject: str = "Quick question") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Rep <{REP}>"
    message["To"] = f"Jo <{JO}>"
    message["Cc"] = f"Sam <{SAM}>"
    message["Subject"] = subject
    message.set_content("Hi Jo, do you have 15 minutes this week?")
    return message


# -- stamping ---------------------------------------------------------------------------------


def test_stamp_sets_a_signed_message_id_and_records_the_send(tracker: ReplyTracker) -> None:
    message = outgoing()
    sent = tracker.stamp(message, "c42:p7")
    token = tracker.generator.verify(message["Message-ID"])  # type: ignore[union-attr]
    assert token is not None
    assert token.ref == "c42:p7"
    assert sent.message_id == parse_headers(message.as_bytes()).message_id
    assert (sent.sender, sent.to, sent.cc) == (REP, (JO,), (SAM,))
    assert tracker.store.find_sent_by_ref("c42:p7") == sent


def test_stamp_sets_an_outlook_thread_index_and_topic(tracker: ReplyTracker) -> None:
    message = outgoing("Re: Quick question")
    sent = tracker.stamp(message, "c1")
    index = ThreadIndex.decode(message["Thread-Index"])
    assert index is not None
    assert index.guid == sent.thread_index
    assert message["Thread-Topic"] == "Quick question"


def test_a_follow_up_threads_under_the_previous_step(tracker: ReplyTracker) -> None:
    first = tracker.stamp(outgoing(), "c42:p7:s1")
    message = outgoing("Re: Quick question")
    second = tracker.stamp(message, "c42:p7:s2", follow_up_of=first)
    h = parse_headers(message.as_bytes())
    assert h.in_reply_to == (first.message_id,)
    assert h.references == (first.message_id,)
    index = ThreadIndex.decode(h.get("Thread-Index"))
    assert index is not None
    assert index.guid == first.thread_index == second.thread_index
    assert index.child_count == 1


def test_long_ids_are_not_folded_into_encoded_words(tracker: ReplyTracker) -> None:
    first = tracker.stamp(outgoing(), "campaign-123456:prospect-987654:step-1")
    message = outgoing()
    tracker.stamp(message, "campaign-123456:prospect-987654:step-2", follow_up_of=first)
    assert b"=?utf-8?" not in message.as_bytes()


@pytest.mark.parametrize("missing", ["From", "To"])
def test_stamp_refuses_a_message_without_from_or_to(tracker: ReplyTracker, missing: str) -> None:
    message = outgoing()
    del message[missing]
    with pytest.raises(ConfigError):
        tracker.stamp(message, "c1")


def test_record_alias_adds_the_id_a_provider_used(tracker: ReplyTracker) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    tracker.record_alias("c42:p7", "<AAMkAGI2.graph@outlook.example>")
    events = tracker.process(build_reply(in_reply_to="<AAMkAGI2.graph@outlook.example>"))
    assert [e.ref for e in events] == ["c42:p7"]
    assert events[0].sent == sent


# -- processing -----------------------------------------------------------------------------------


def test_a_reply_stops_the_campaign_and_is_logged(
    tracker: ReplyTracker, stop: CapturingHook, crm: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    events = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO))
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.action, event.role) == (Kind.REPLY, Action.STOP, Role.RECIPIENT)
    assert event.method is MatchMethod.TOKEN
    assert event.body_text is not None
    assert "Tuesday" in event.body_text
    assert stop.events == [event]
    assert crm.events == [event]


def test_replies_from_the_cc_and_from_another_address_stop_too(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    cc = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=SAM))
    other = tracker.process(
        build_reply(in_reply_to=f"<{sent.message_id}>", from_="jo.home@mail.example")
    )
    assert [(e.role, e.action) for e in (*cc, *other)] == [
        (Role.CC, Action.STOP),
        (Role.OTHER, Action.STOP),
    ]
    assert len(stop.events) == 2


def test_processing_the_same_message_again_yields_nothing(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    reply = build_reply(in_reply_to=f"<{sent.message_id}>")
    first = tracker.process(reply)
    assert tracker.process(reply) == []
    assert len(first) == 1
    assert len(stop.events) == 1


def test_an_out_of_office_pauses_until_the_return_date(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    ooo = build_out_of_office(
        language="de",
        return_date=dt.date(2027, 3, 8),
        in_reply_to=f"<{sent.message_id}>",
        from_=JO,
        date=NOW,
    )
    [event] = tracker.process(ooo)
    assert (event.kind, event.action) == (Kind.OUT_OF_OFFICE, Action.PAUSE)
    assert event.resume_on == dt.date(2027, 3, 9)
    assert stop.events == [event]


def test_a_hard_bounce_stops_the_campaign(tracker: ReplyTracker) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    [event] = tracker.process(build_bounce(original_message_id=f"<{sent.message_id}>"))
    assert (event.kind, event.action) == (Kind.BOUNCE, Action.STOP)
    assert event.bounce is not None
    assert event.bounce.recipients[0].hard


def test_own_mail_and_unrelated_mail_produce_no_event(
    tracker: ReplyTracker, stop: CapturingHook, crm: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    own = build_reply(in_reply_to=f"<{sent.message_id}>", from_=f"Rep <{REP}>", to=JO)
    newsletter = build_reply(in_reply_to=None, from_="news@vendor.example")
    assert tracker.process(own) == []
    assert tracker.process(newsletter) == []
    assert stop.events == crm.events == []


# -- durability ------------------------------------------------------------------------------


def test_a_failing_hook_keeps_its_event_and_others_go_on(
    tracker: ReplyTracker, crm: CapturingHook, stop: CapturingHook, clock: Clock
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    crm.failures = 1
    [first] = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO))
    [second] = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=SAM))
    assert [e.event_id for e in crm.events] == [second.event_id]
    assert len(stop.events) == 2
    assert tracker.retry_pending().delivered == 0  # not due yet: backoff
    clock.now += dt.timedelta(minutes=5)
    result = tracker.retry_pending()
    assert (result.delivered, result.failed, result.dead) == (1, 0, 0)
    assert [e.event_id for e in crm.events] == [second.event_id, first.event_id]
    assert crm.events[1] == first


def test_a_hook_that_always_fails_is_parked_dead_after_max_attempts(
    tracker: ReplyTracker, crm: CapturingHook, clock: Clock
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    crm.failures = 100
    tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>"))
    outcomes = []
    for _ in range(5):
        clock.now += dt.timedelta(hours=7)
        outcomes.append(tracker.retry_pending())
    assert sum(r.failed for r in outcomes) == 1
    assert sum(r.dead for r in outcomes) == 1
    [dead] = tracker.store.dead_outbox()
    assert dead.attempts == 3
    assert "injected" in (dead.last_error or "")


def test_a_crash_between_commit_and_hook_redelivers_with_the_same_event_id(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "crash.db"
    delivered = CapturingHook()
    with SQLiteStore(path) as store:
        tracker = ReplyTracker(store, campaign_stop=delivered, clock=clock)
        sent = tracker.stamp(outgoing(), "c42:p7")
        monkeypatch.setattr(ReplyTracker, "_dispatch", lambda self, decided: [])  # the crash
        tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>"))
        monkeypatch.undo()
    assert delivered.events == []
    with SQLiteStore(path) as store:  # the restart
        tracker = ReplyTracker(store, campaign_stop=delivered, clock=clock)
        assert tracker.retry_pending().delivered == 1
        assert tracker.retry_pending().delivered == 0
    [event] = delivered.events
    assert event.ref == "c42:p7"


# -- polling ---------------------------------------------------------------------------------


def test_poll_processes_new_mail_once_and_saves_the_cursor(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    source = MemorySource(name="inbox")
    source.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO))
    source.add(build_reply(in_reply_to=None, from_="news@vendor.example"))
    first = tracker.poll(source, limit=1)
    assert (first.seen, first.matched, first.events, first.batches) == (2, 1, 1, 2)
    assert tracker.store.load_cursor("inbox") is not None
    source.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=SAM))
    second = tracker.poll(source)
    assert (second.seen, second.matched) == (1, 1)
    assert len(stop.events) == 2


def test_a_source_failure_loses_nothing_and_duplicates_nothing(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    source = MemorySource(name="inbox")
    for sender in (JO, SAM, "x@customer.example"):
        source.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=sender))
    tracker.poll(source, limit=1, max_batches=1)
    source.fail_next(1)
    failed = tracker.poll(source, limit=1)
    assert failed.errors
    tracker.poll(source, limit=1)
    assert sorted(e.responder.addr for e in stop.events if e.responder) == sorted(
        [JO, SAM, "x@customer.example"]
    )


def test_the_same_message_in_two_mailboxes_yields_one_event(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    reply = build_reply(in_reply_to=f"<{sent.message_id}>")
    inbox, shared = MemorySource(name="rep-inbox"), MemorySource(name="team-inbox")
    inbox.add(reply)
    shared.add(reply)
    assert tracker.poll(inbox).events == 1
    result = tracker.poll(shared)
    assert (result.events, result.duplicates) == (0, 1)
    assert len(stop.events) == 1


def test_a_third_step_keeps_the_thread_root_first_in_references(tracker: ReplyTracker) -> None:
    first = tracker.stamp(outgoing(), "c42:p7:s1")
    second = tracker.stamp(outgoing("Re: Quick question"), "c42:p7:s2", follow_up_of=first)
    message = outgoing("Re: Quick question")
    tracker.stamp(message, "c42:p7:s3", follow_up_of=[first, second])
    h = parse_headers(message.as_bytes())
    assert h.references == (first.message_id, second.message_id)
    assert h.in_reply_to == (second.message_id,)
    index = ThreadIndex.decode(h.get("Thread-Index"))
    assert index is not None
    assert (index.guid, index.child_count) == (first.thread_index, 2)


def test_an_unreadable_outbox_payload_is_parked_not_fatal(
    tracker: ReplyTracker, crm: CapturingHook, clock: Clock
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    with tracker.store.transaction() as tx:
        tx.enqueue("evt_garbage", "crm_log", b"{not json", NOW)
    crm.failures = 1
    tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>"))
    clock.now += dt.timedelta(hours=1)
    result = tracker.retry_pending()
    assert (result.delivered, result.dead) == (1, 1)
    assert [e.event_id for e in tracker.store.dead_outbox()] == ["evt_garbage"]
