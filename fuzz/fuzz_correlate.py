"""Fuzz `Correlator.correlate` against a store of a few recorded sends, with signed ids.

Run (see README.md)::

    .venv/bin/python fuzz/fuzz_correlate.py --runs 1000000 --report correlate.json

The store holds four sends: plain and signed Message-IDs, one with a provider thread id and
one with an Outlook Thread-Index GUID. The correlator has the signing generator (token
matches), an own address, and the subject heuristic switched on, so every method of
``correlate.py`` Rule 2 can be reached. Seeds answer those sends in every way
(`replytrack.testing` builders). A correlation must name a ref the store or a token knows.
"""

# ruff: noqa: S101 - the asserts are the checks; one that fails is a finding

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _runner  # found through the sys.path line above

with _runner.instrumented(__name__ == "__main__"):
    from replytrack.correlate import Correlation, Correlator, MatchMethod
    from replytrack.msgid import MessageIdGenerator
    from replytrack.store import MemoryStore, SentMessage
    from replytrack.threadindex import ThreadIndex

SECRET = b"fuzzing secret, not a real one"
START = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
GUID = bytes(range(16))


GENERATOR = MessageIdGenerator(domain="mail.sales.example", secret=SECRET, clock=START.timestamp)


def fixture() -> tuple[Correlator, list[SentMessage]]:
    """The correlator under test and the sends its store holds."""
    generator = GENERATOR
    sends = [
        SentMessage(
            message_id="<send-1@mail.sales.example>",
            ref="c1:p1",
            sender="rep@sales.example",
            to=("jo@customer.example",),
            cc=("cc@customer.example",),
            subject="Quick question",
            sent_at=START,
        ),
        SentMessage(
            message_id=generator.generate(ref="c1:p2"),
            ref="c1:p2",
            sender="rep@sales.example",
            to=("ann@other.example",),
            subject="Pricing for Q1",
            sent_at=START,
            provider_thread_id="thread-42",
        ),
        SentMessage(
            message_id=generator.generate(ref="c2:p3"),
            ref="c2:p3",
            sender="rep@sales.example",
            to=("bo@third.example",),
            subject="Follow-up",
            sent_at=START,
            thread_index=GUID,
        ),
        SentMessage(
            message_id="<plain.4@MAIL.sales.example>",
            ref="c2:p4",
            sender="rep2@sales.example",
            to=("cy@fourth.example",),
            subject=None,
            sent_at=START,
        ),
    ]
    store = MemoryStore()
    for sent in sends:
        store.record_sent(sent)
    correlator = Correlator(
        store,
        generator=generator,
        own_addresses=("rep@sales.example",),
        subject_window=dt.timedelta(days=60),
    )
    return correlator, sends


CORRELATOR, SENDS = fixture()
KNOWN_REFS = frozenset(s.ref for s in SENDS)


def check(data: bytes) -> None:
    """Correlate `data`; a match names a known send, or a verified token's ref."""
    found = CORRELATOR.correlate(data, now=START + dt.timedelta(days=1))
    if found is None:
        return
    assert isinstance(found, Correlation)
    assert isinstance(found.method, MatchMethod)
    if found.sent is not None:
        assert found.sent in SENDS
        assert found.ref == found.sent.ref
    else:
        assert found.method in (MatchMethod.TOKEN, MatchMethod.BOUNCE_ORIGINAL)
    assert found.classification.reasons or found.classification.kind is not None


def extra_seeds() -> list[tuple[str, bytes]]:
    """Messages that answer the fixture's sends by every method of ``correlate.py`` Rule 2."""
    from replytrack import testing  # noqa: PLC0415 - seeds only, not instrumented

    signed = SENDS[1].message_id
    outlook = ThreadIndex.new(START, GUID).child(START + dt.timedelta(hours=2), random=7)
    # A token for a send the store never had: correlates by the token alone.
    unknown_token = GENERATOR.generate(ref="lost:1")
    return [
        ("reply-in-reply-to", testing.build_reply(in_reply_to="<send-1@mail.sales.example>")),
        (
            "reply-signed",
            testing.build_reply(in_reply_to=f"<{signed}>", from_="ann@other.example"),
        ),
        ("reply-lost-token", testing.build_reply(in_reply_to=f"<{unknown_token}>")),
        (
            "reply-references",
            testing.build_reply(
                in_reply_to=None, references=["<x@y.example>", "<plain.4@mail.sales.example>"]
            ),
        ),
        (
            "reply-thread-index",
            testing.build_reply(
                in_reply_to=None,
                from_="bo@third.example",
                headers={"Thread-Index": outlook.encode(), "Thread-Topic": "Follow-up"},
            ),
        ),
        (
            "reply-subject",
            testing.build_reply(
                in_reply_to=None, from_="ann@other.example", subject="RE: Pricing for Q1"
            ),
        ),
        ("ooo", testing.build_out_of_office(language="fr")),
        ("bounce", testing.build_bounce(original_message_id="<send-1@mail.sales.example>")),
        ("own-mail", testing.build_reply(from_="Rep <rep@sales.example>")),
    ]


if __name__ == "__main__":
    _runner.main("correlate", check, extra_seeds())
