"""Security properties (docs/security.md): what an attacker who writes mail cannot do.

The attacker controls every byte of the mail that reaches a rep's mailbox, and may see ids
that were forwarded to them. They must not be able to stop a campaign they were not part of,
to forge a token, to make the rep's own mail count as a reply (or a reply vanish as own mail),
to inject headers into what the host sends, or to read secrets and bodies from the logs.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import secrets
import sqlite3
import string
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

import pytest

from replytrack import MemoryStore, MessageIdGenerator, ReplyTracker, SQLiteStore
from replytrack.errors import ConfigError
from replytrack.testing import CapturingHook, MemorySource, build_reply

KEY = b"k" * 32
OLD_KEY = b"o" * 32
REP = "rep@sales.example"
JO = "jo@customer.example"


def outgoing(subject: str = "Quick question") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Rep <{REP}>"
    message["To"] = f"Jo <{JO}>"
    message["Subject"] = subject
    message.set_content("Hi Jo, do you have 15 minutes this week?")
    return message


@pytest.fixture
def tracker() -> ReplyTracker:
    return ReplyTracker(
        MemoryStore(),
        MessageIdGenerator("mail.sales.example", secret=KEY),
        campaign_stop=CapturingHook(),
        own_addresses=[REP],
    )


# -- tokens -------------------------------------------------------------------------------------


def test_every_single_character_change_of_a_token_is_rejected() -> None:
    generator = MessageIdGenerator("mail.sales.example", secret=KEY)
    token = generator.generate(ref="c42:p7")
    left = token[1 : token.index("@")]
    alphabet = string.ascii_lowercase + string.digits
    for i, char in enumerate(left):
        if char == ".":
            continue
        for other in alphabet:
            if other != char:
                forged = f"<{left[:i]}{other}{left[i + 1 :]}{token[token.index('@') :]}"
                assert generator.verify(forged) is None, forged


def test_a_token_signed_with_another_key_is_rejected() -> None:
    ours = MessageIdGenerator("mail.sales.example", secret=KEY)
    theirs = MessageIdGenerator("mail.sales.example", secret=b"x" * 32)
    assert ours.verify(theirs.generate(ref="c42:p7")) is None


def test_a_token_with_another_ref_spliced_in_is_rejected() -> None:
    generator = MessageIdGenerator("mail.sales.example", secret=KEY)
    a, b = generator.generate(ref="c1:p1"), generator.generate(ref="c2:p2")
    parts_a, parts_b = a.split("."), b.split(".")
    spliced = ".".join([*parts_a[:2], parts_b[2], *parts_a[3:]])
    assert generator.verify(spliced) is None


def test_old_keys_still_verify_after_rotation_and_new_ids_use_the_new_key() -> None:
    before = MessageIdGenerator("mail.sales.example", secret=OLD_KEY).generate(ref="c42:p7")
    rotated = MessageIdGenerator("mail.sales.example", secret=[OLD_KEY, KEY])
    token = rotated.verify(before)
    assert token is not None
    assert token.ref == "c42:p7"
    after = rotated.generate(ref="c43:p1")
    assert MessageIdGenerator("mail.sales.example", secret=KEY).verify(after) is not None
    assert MessageIdGenerator("mail.sales.example", secret=OLD_KEY).verify(after) is None


def test_a_reply_to_a_guessed_id_matches_nothing(tracker: ReplyTracker) -> None:
    """Ids carry >= 96 random bits: guessing one of the 24-character plain ids, or forging the
    80-bit tag of a signed one, is out of reach; a wrong guess matches no send."""
    tracker.stamp(outgoing(), "c42:p7")
    plain = MessageIdGenerator("mail.sales.example")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    for _ in range(200):
        guess = "".join(secrets.choice(alphabet) for _ in range(24))
        forged_tag = "".join(secrets.choice(alphabet) for _ in range(16))
        signed_shape = plain.generate().replace("<", "<r1.").replace("@", f".{forged_tag}@")
        for mid in (f"<{guess}@mail.sales.example>", signed_shape):
            assert tracker.process(build_reply(in_reply_to=mid)) == []


# -- own mail ------------------------------------------------------------------------------------


def test_a_spoofed_sender_does_not_make_the_reps_mail_a_reply(tracker: ReplyTracker) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    mine = build_reply(in_reply_to=sent.message_id, from_=f"Rep <{REP}>", headers={"Sender": JO})
    assert tracker.process(mine) == []


def test_a_spoofed_sender_does_not_hide_a_prospects_reply(tracker: ReplyTracker) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    reply = build_reply(in_reply_to=sent.message_id, from_=JO, headers={"Sender": REP})
    (event,) = tracker.process(reply)
    assert event.responder is not None
    assert event.responder.addr == JO


# -- header injection ----------------------------------------------------------------------------


def test_a_subject_with_control_characters_gives_a_clean_thread_topic(
    tracker: ReplyTracker,
) -> None:
    raw = (
        b"From: rep@sales.example\r\nTo: jo@customer.example\r\n"
        b"Subject: =?utf-8?q?Hi=0D=0ABcc:_victim@evil.example=00?=\r\n\r\nHi\r\n"
    )
    for policy in (email.policy.compat32, email.policy.default):
        message = email.message_from_bytes(raw, policy=policy)
        tracker.stamp(message, "c42:p7")  # type: ignore[arg-type]
        for name in ("Message-ID", "X-Replytrack-ID", "Thread-Index", "Thread-Topic"):
            value = str(message[name])
            assert not set(value) & {"\r", "\n", "\x00"}, (name, value)
        assert b"\r\nBcc:" not in message.as_bytes()


def test_stamp_refuses_to_copy_an_id_holding_nul_into_references(
    tracker: ReplyTracker,
) -> None:
    first = tracker.stamp(outgoing(), "c42:p7:s1")
    follow = email.message_from_bytes(
        b"From: rep@sales.example\r\nTo: jo@customer.example\r\nSubject: Re: Quick\r\n"
        b'References: <"a\x00b"@evil.example>\r\n\r\nHi\r\n',
        policy=email.policy.compat32,
    )
    with pytest.raises(ConfigError, match="NUL"):
        tracker.stamp(follow, "c42:p7:s2", follow_up_of=first)  # type: ignore[arg-type]


def test_a_ref_with_line_breaks_cannot_reach_a_header(tracker: ReplyTracker) -> None:
    message = outgoing()
    tracker.stamp(message, "c42\r\nBcc: victim@evil.example")
    assert b"\r\nBcc:" not in message.as_bytes()
    token = tracker.generator.verify(message["Message-ID"])  # type: ignore[union-attr]
    assert token is not None
    assert token.ref == "c42\r\nBcc: victim@evil.example"  # carried, hex-encoded


def test_generator_domains_with_control_characters_are_refused() -> None:
    for domain in ("mail.example\r\nBcc: x", "mail\x00.example", "mail.example\n"):
        with pytest.raises(ConfigError):
            MessageIdGenerator(domain)


# -- logs ----------------------------------------------------------------------------------------


def test_no_secret_or_body_is_logged_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-" + secrets.token_hex(16)
    body = "Confidential: our budget is 1,234,567 EUR " + secrets.token_hex(8)
    caplog.set_level(logging.INFO, logger="replytrack")

    def failing_hook(event: object) -> None:
        raise RuntimeError("CRM unavailable")

    with SQLiteStore(tmp_path / "s.db") as store:
        tracker = ReplyTracker(
            store,
            MessageIdGenerator("mail.sales.example", secret=secret),
            campaign_stop=failing_hook,
            crm_log=failing_hook,
            own_addresses=[REP],
        )
        sent = tracker.stamp(outgoing(), "c42:p7")
        inbox = MemorySource(name="inbox")
        inbox.add(build_reply(in_reply_to=sent.message_id, body=body))
        inbox.add(build_reply(in_reply_to=sent.message_id, from_=REP, body=body))
        tracker.poll(inbox)
        inbox.fail_next(1, OSError("connection reset"))
        tracker.poll(inbox)
        tracker.retry_pending()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records  # the failures above were logged ...
    assert secret not in logged  # ... but never the secret
    assert "1,234,567" not in logged  # ... nor the body


# -- SQL ---------------------------------------------------------------------------------------

HOSTILE = "x'); DROP TABLE sends; --"


class RecordingConnection(sqlite3.Connection):
    """Keeps the text of every statement, before SQLite binds any value into it."""

    texts: ClassVar[list[str]] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.texts.append(sql)
        return super().execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.texts.append(sql)
        return super().executemany(sql, *args)


def test_sqlite_never_puts_a_value_into_sql_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile ids, refs, addresses, subjects, keys and payloads travel as bound parameters:
    none of them ever appears in the text of a statement, and the database stays whole."""
    connect = sqlite3.connect
    monkeypatch.setattr(
        "replytrack.store.sqlite.sqlite3.connect",
        lambda *a, **k: connect(*a, **k, factory=RecordingConnection),
    )
    RecordingConnection.texts.clear()
    now = dt.datetime(2027, 3, 1, tzinfo=dt.timezone.utc)
    with SQLiteStore(tmp_path / "s.db") as store:
        tracker = ReplyTracker(store, own_addresses=[REP])
        message = outgoing(subject=f"Re: {HOSTILE}")
        message.replace_header("To", f'"{HOSTILE}" <jo@customer.example>')
        sent = tracker.stamp(message, ref=HOSTILE)
        tracker.record_alias(HOSTILE, f'<"{HOSTILE}"@x.example>')
        reply = build_reply(
            in_reply_to=f'<"{HOSTILE}"@x.example>',
            message_id=f'<"{HOSTILE}2"@x.example>',
            subject=HOSTILE,
        )
        assert [e.ref for e in tracker.process(reply)] == [HOSTILE]
        store.find_sent_by_subject(HOSTILE, [f'"{HOSTILE}"@x.example'])
        store.find_sent_by_ref(HOSTILE)
        store.find_sent_by_provider_thread(HOSTILE)
        store.save_cursor(HOSTILE, HOSTILE)
        assert store.load_cursor(HOSTILE) == HOSTILE
        store.claim_source(HOSTILE, HOSTILE, now, now + dt.timedelta(minutes=1))
        store.find_outbox(HOSTILE)
        assert store.find_sent([sent.message_id])
    texts = RecordingConnection.texts
    assert len(texts) > 20
    assert [t for t in texts if "DROP" in t or "x')" in t] == []
