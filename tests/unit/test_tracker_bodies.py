"""`ReplyTracker.poll` on sources that deliver header blocks first (IMAP, Gmail, Graph).

The tracker asks for the bodies it needs, and only those (tracker Rule 4): the possible
reports before correlating (a bounce matches through the original it carries), then the
messages that matched. It asks for a batch's bodies together, so that a source which can
fetch several in one request (`BaseSource._fetch_bodies`; IMAP: one ``UID FETCH``) makes two
requests per batch rather than one per message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from email.message import EmailMessage
from types import TracebackType

import pytest
from typing_extensions import Self

from replytrack import Kind, MemoryStore, ReplyTracker
from replytrack.classify import MAX_PARSE_BYTES
from replytrack.correlate import MatchMethod
from replytrack.events import Action, ReplyEvent
from replytrack.sources import Batch, IncomingMessage, MailboxSource
from replytrack.store import SentMessage
from replytrack.testing import (
    CapturingHook,
    MemorySource,
    build_bounce,
    build_out_of_office,
    build_reply,
)
from replytrack.tracker import BODIES_PER_REQUEST

NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
REP = "rep@sales.example"
#: The kinds of the events `inbox` gives, in order.
KINDS = [Kind.REPLY, Kind.OUT_OF_OFFICE, Kind.BOUNCE, Kind.REPLY]


class HeadersFirst(MemorySource):
    """A mailbox that delivers header blocks, and records each request for bodies."""

    def __init__(self, messages: Sequence[bytes]) -> None:
        super().__init__(messages, name="inbox", headers_only=True)
        self.requests: list[int] = []

    def _fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
        self.requests.append(len(messages))
        return super()._fetch_bodies(messages)


class ProtocolOnly:
    """A host's source written against the `MailboxSource` protocol, without `BaseSource`."""

    def __init__(self, inner: MemorySource) -> None:
        self.inner = inner
        self.body_calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def initial_cursor(self, since: dt.datetime | None = None) -> str:
        return self.inner.initial_cursor(since)

    def fetch(self, cursor: str | None, limit: int = 100) -> Batch:
        return self.inner.fetch(cursor, limit)

    def fetch_body(self, message: IncomingMessage) -> bytes:
        self.body_calls += 1
        return self.inner.fetch_body(message)

    def wait(self, cursor: str | None, timeout: float) -> bool:
        return False

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def campaign() -> tuple[ReplyTracker, CapturingHook, list[SentMessage]]:
    crm = CapturingHook()
    tracker = ReplyTracker(MemoryStore(), crm_log=crm, own_addresses=[REP], clock=lambda: NOW)
    sends = []
    for n in range(3):
        message = EmailMessage()
        message["From"] = REP
        message["To"] = f"p{n}@customer{n}.example"
        message["Subject"] = f"Quick question {n}"
        message.set_content("Do you have 15 minutes this week?")
        sends.append(tracker.stamp(message, ref=f"c1:p{n}"))
    return tracker, crm, sends


def inbox(sends: list[SentMessage]) -> list[bytes]:
    """Replies, an out-of-office, a bounce, and mail that needs no body."""
    return [
        build_reply(in_reply_to=f"<{sends[0].message_id}>", from_="p0@customer0.example"),
        build_reply(in_reply_to=None, from_="news@vendor.example", subject="Our newsletter"),
        build_out_of_office(
            in_reply_to=f"<{sends[1].message_id}>",
            from_="p1@customer1.example",
            return_date=dt.date(2027, 3, 8),
        ),
        build_reply(in_reply_to="<other@elsewhere.example>", from_="x@elsewhere.example"),
        # A bounce names no send in its headers: it matches through the original it carries.
        build_bounce(
            recipients=["p2@customer2.example"],
            original_message_id=f"<{sends[2].message_id}>",
        ),
        build_reply(in_reply_to=f"<{sends[1].message_id}>", from_="boss@customer1.example"),
    ]


def summary(events: list[ReplyEvent]) -> list[tuple[str | None, Kind, MatchMethod, Action]]:
    return [(e.ref, e.kind, e.method, e.action) for e in events]


def test_a_batch_asks_for_its_bodies_in_two_requests() -> None:
    tracker, crm, sends = campaign()
    source = HeadersFirst(inbox(sends))
    result = tracker.poll(source)
    assert (result.seen, result.matched, result.batches, result.errors) == (6, 4, 1, ())
    # The bounce before correlating; then the three messages that matched on their headers.
    # The newsletter and the reply to someone else's mail are never read whole.
    assert source.requests == [1, 3]
    assert source.body_fetches == 4
    assert summary(crm.events) == [
        ("c1:p0", Kind.REPLY, MatchMethod.IN_REPLY_TO, Action.STOP),
        ("c1:p1", Kind.OUT_OF_OFFICE, MatchMethod.IN_REPLY_TO, Action.PAUSE),
        ("c1:p2", Kind.BOUNCE, MatchMethod.BOUNCE_ORIGINAL, Action.STOP),
        ("c1:p1", Kind.REPLY, MatchMethod.IN_REPLY_TO, Action.STOP),
    ]
    # Classified and described from the whole message, not from its header block.
    assert crm.events[1].resume_on == dt.date(2027, 3, 9)
    assert crm.events[0].body_text is not None
    assert "Could we talk on Tuesday?" in crm.events[0].body_text


def test_headers_first_gives_what_whole_messages_give() -> None:
    results = []
    for headers_only in (False, True):
        tracker, crm, sends = campaign()
        source = MemorySource(inbox(sends), name="inbox", headers_only=headers_only)
        tracker.poll(source, limit=4)
        results.append([(e.ref, e.kind, e.action, e.resume_on, e.body_text) for e in crm.events])
    assert results[0] == results[1]
    assert len(results[0]) == 4


def test_a_source_without_fetch_bodies_is_asked_one_message_at_a_time() -> None:
    tracker, crm, sends = campaign()
    source = ProtocolOnly(MemorySource(inbox(sends), name="inbox", headers_only=True))
    result = tracker.poll(source)
    assert (result.matched, result.errors) == (4, ())
    assert source.body_calls == 4
    assert [e.kind for e in crm.events] == [
        Kind.REPLY,
        Kind.OUT_OF_OFFICE,
        Kind.BOUNCE,
        Kind.REPLY,
    ]


def test_a_failed_body_request_acknowledges_nothing() -> None:
    tracker, crm, sends = campaign()

    class Short(HeadersFirst):
        def _fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
            return super()._fetch_bodies(messages)[:-1]

    class ShortProtocolOnly(ProtocolOnly):
        def fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
            return []

    protocol_only = ShortProtocolOnly(MemorySource(inbox(sends), name="inbox", headers_only=True))
    sources: tuple[MailboxSource, ...] = (Short(inbox(sends)), protocol_only)
    for source in sources:
        broken = tracker.poll(source)
        assert len(broken.errors) == 1
        assert "fetch_bodies gave 0 bodies for 1 messages" in broken.errors[0]
        assert crm.events == []
        assert tracker.store.load_cursor("inbox") is None
    # A working source from the same cursor: everything, once.
    assert tracker.poll(HeadersFirst(inbox(sends))).matched == 4
    assert len(crm.events) == 4


@pytest.mark.parametrize("limit", [1, 2, 6])
def test_any_batch_size_gives_the_same_events(limit: int) -> None:
    tracker, crm, sends = campaign()
    tracker.poll(HeadersFirst(inbox(sends)), limit=limit)
    assert [e.kind for e in crm.events] == [
        Kind.REPLY,
        Kind.OUT_OF_OFFICE,
        Kind.BOUNCE,
        Kind.REPLY,
    ]


def test_bodies_are_asked_for_twenty_at_a_time() -> None:
    tracker, crm, sends = campaign()
    replies = [
        build_reply(
            in_reply_to=f"<{sends[n % 3].message_id}>",
            from_=f"p{n % 3}@customer{n % 3}.example",
            message_id=f"<r{n}@customer.example>",
        )
        for n in range(45)
    ]
    source = HeadersFirst(replies)
    assert tracker.poll(source).matched == 45
    # At most BODIES_PER_REQUEST whole messages are held at once.
    assert source.requests == [BODIES_PER_REQUEST, BODIES_PER_REQUEST, 5]
    assert len(crm.events) == 45


def test_a_huge_reply_gives_the_same_event_headers_first() -> None:
    events = []
    for headers_only in (False, True):
        tracker, crm, sends = campaign()
        huge = build_reply(
            in_reply_to=f"<{sends[0].message_id}>",
            from_="p0@customer0.example",
            message_id="<huge@customer0.example>",
            body="Yes, Tuesday works.\n\n" + "A long quoted history line.\n" * 120_000,
        )
        assert len(huge) > 3 * MAX_PARSE_BYTES
        tracker.poll(MemorySource([huge], name="inbox", headers_only=headers_only))
        (event,) = crm.events
        events.append((event.event_id, event.kind, event.action, event.reasons, event.body_text))
    assert events[0] == events[1]
    _, kind, action, _, text = events[0]
    assert (kind, action) == (Kind.REPLY, Action.STOP)
    assert text is not None
    assert text.startswith("Yes, Tuesday works.")
