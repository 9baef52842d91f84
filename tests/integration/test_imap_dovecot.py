"""IMAPSource against a real Dovecot: the evidence that no reply is lost or counted twice.

The behaviour every source shares runs in ``tests/unit/test_source_contract.py`` (the "imap"
harness, on this same server); the IMAP client logic that needs a provider Dovecot is not
(Gmail's extensions, backoff timings) is in ``tests/unit/test_sources_imap.py``. Here each
scenario runs a `ReplyTracker` over an SQLite store with stamped sends and counts the events
its hook received: every reply must give exactly one event, whatever the server did meanwhile
(new mail between polls, a UIDVALIDITY change, a restart, a dropped connection).
"""

from __future__ import annotations

import datetime as dt
import email.message
import imaplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harnesses import drain
from harnesses.imap import IMAPAdmin, imapclient, kick_before
from replytrack import ReplyTracker
from replytrack.errors import SourceError
from replytrack.sources.imap import IMAPSource
from replytrack.store import SentMessage, SQLiteStore
from replytrack.testing import CapturingHook, build_bounce, build_reply
from servers import Dovecot

UTC = dt.timezone.utc
REP = "rep@sales.example"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def admin(dovecot: Dovecot, imap_user: str) -> Iterator[IMAPAdmin]:
    helper = IMAPAdmin(dovecot, imap_user)
    try:
        yield helper
    finally:
        helper.close()


def make_source(dovecot: Dovecot, user: str, **kwargs: Any) -> IMAPSource:
    kwargs.setdefault("ssl", False)
    kwargs.setdefault("password", dovecot.password)
    kwargs.setdefault("timeout", 10)
    return IMAPSource(dovecot.host, port=kwargs.pop("port", dovecot.port), username=user, **kwargs)


class Campaign:
    """A tracker with `sends` stamped sends, and the replies to them."""

    def __init__(self, path: Path, sends: int) -> None:
        self.store = SQLiteStore(path / "replytrack.db")
        self.stop = CapturingHook()
        self.tracker = ReplyTracker(self.store, campaign_stop=self.stop, own_addresses=(REP,))
        self.sends: list[SentMessage] = []
        for n in range(sends):
            outgoing = email.message.EmailMessage()
            outgoing["From"] = f"Rep <{REP}>"
            outgoing["To"] = f"p{n}@prospect{n}.example"
            outgoing["Subject"] = f"Quick question {n}"
            outgoing.set_content("Do you have 15 minutes this week?")
            self.sends.append(self.tracker.stamp(outgoing, ref=f"c1:p{n}"))

    def reply(self, n: int) -> bytes:
        """Prospect `n`'s reply to its send (Message-ID ``<r{n}@prospect{n}.example>``)."""
        return build_reply(
            in_reply_to=self.sends[n].message_id,
            from_=f"P{n} <p{n}@prospect{n}.example>",
            to=f"Rep <{REP}>",
            subject=f"Re: Quick question {n}",
            message_id=f"<r{n}@prospect{n}.example>",
        )

    def refs(self) -> list[str]:
        """The refs of the events received, in order."""
        return [event.ref for event in self.stop.events]

    def assert_exactly_once(self, replied: range | list[int]) -> None:
        """Every reply in `replied` gave one event; nothing else did."""
        refs = self.refs()
        assert sorted(refs) == sorted(f"c1:p{n}" for n in replied), refs
        ids = [event.event_id for event in self.stop.events]
        assert len(ids) == len(set(ids))

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Campaign]:
    helper = Campaign(tmp_path, 40)
    try:
        yield helper
    finally:
        helper.close()


def poll_until_done(tracker: ReplyTracker, source: IMAPSource, **kwargs: Any) -> None:
    result = tracker.poll(source, **kwargs)
    assert result.errors == (), result.errors


# --------------------------------------------------------------------------------------------
# New mail, folders, order
# --------------------------------------------------------------------------------------------


def test_new_mail_across_polls(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin, campaign: Campaign
) -> None:
    for n in range(3):
        admin.append("INBOX", campaign.reply(n))
    admin.append("INBOX", build_reply(in_reply_to=None, message_id="<noise@elsewhere.example>"))
    with make_source(dovecot, imap_user) as source:
        poll_until_done(campaign.tracker, source)
        assert campaign.refs() == ["c1:p0", "c1:p1", "c1:p2"]
        for n in range(3, 7):
            admin.append("INBOX", campaign.reply(n))
        poll_until_done(campaign.tracker, source, limit=2)
        poll_until_done(campaign.tracker, source)  # caught up: nothing again
    campaign.assert_exactly_once(range(7))
    assert campaign.refs()[3:] == ["c1:p3", "c1:p4", "c1:p5", "c1:p6"]  # oldest first


def test_nothing_is_marked_seen(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin, campaign: Campaign
) -> None:
    """EXAMINE and BODY.PEEK: the headers and the bodies read leave every flag as it was."""
    for n in range(4):
        admin.append("INBOX", campaign.reply(n))
    admin.append(
        "INBOX",
        build_bounce(
            recipients=["p5@prospect5.example"], original_message_id=campaign.sends[5].message_id
        ),
    )
    admin.append("INBOX", campaign.reply(6), flags=[b"\\Flagged"])
    with make_source(dovecot, imap_user) as source:
        batch = source.fetch(None)
        assert all(not m.complete for m in batch.messages)
        for incoming in batch.messages:
            assert source.fetch_body(incoming).startswith(incoming.data.rstrip(b"\r\n"))
        poll_until_done(campaign.tracker, source)
        source.wait(batch.cursor, 0.05)  # IDLE leaves flags alone too
    assert len(campaign.stop.events) == 6  # the replies and the bounce: bodies were read
    flags = admin.flags("INBOX")
    assert len(flags) == 6
    assert all(b"\\Seen" not in f for f in flags.values()), flags
    assert sum(b"\\Flagged" in f for f in flags.values()) == 1


def test_several_folders_in_their_order(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin, campaign: Campaign
) -> None:
    admin.create("Archive")
    admin.append("Archive", campaign.reply(0))
    admin.append("INBOX", campaign.reply(1))
    admin.append("Archive", campaign.reply(2))
    admin.append("INBOX", campaign.reply(3))
    admin.append("Archive", campaign.reply(1))  # the same reply copied: one event
    with make_source(dovecot, imap_user, folders=("INBOX", "Archive")) as source:
        assert source.name == f"imap:{imap_user}@127.0.0.1#INBOX,Archive"
        batch = source.fetch(None, limit=3)
        assert [m.folder for m in batch.messages] == ["INBOX", "INBOX", "Archive"]
        assert batch.more is True
        poll_until_done(campaign.tracker, source, limit=2)
        admin.append("Archive", campaign.reply(4))
        admin.append("INBOX", campaign.reply(5))
        poll_until_done(campaign.tracker, source, limit=2)
    campaign.assert_exactly_once(range(6))
    assert campaign.refs() == ["c1:p1", "c1:p3", "c1:p0", "c1:p2", "c1:p5", "c1:p4"]


def test_a_folder_with_a_non_ascii_name(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin
) -> None:
    """IMAPClient encodes folder names in modified UTF-7 (RFC 3501 section 5.1.3)."""
    folder = "Réponses.Überfällig 日本"
    admin.create(folder)
    admin.append(folder, build_reply(message_id="<m1@prospect.example>"))
    with make_source(dovecot, imap_user, folders=(folder,)) as source:
        (incoming,) = source.fetch(None).messages
        assert incoming.folder == folder
        assert incoming.source_id.startswith("R%C3%A9ponses.%C3%9Cberf%C3%A4llig%20")
        assert b"Could we talk" in source.fetch_body(incoming)


def test_a_special_use_folder_is_found_by_its_attribute(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin
) -> None:
    """RFC 6154: ``\\All`` is the folder Dovecot's configuration marks so, not one so named."""
    admin.create("All Mail")
    admin.append("All Mail", build_reply(message_id="<m1@prospect.example>"))
    with make_source(dovecot, imap_user, folders=("\\All",)) as source:
        (incoming,) = source.fetch(None).messages
        assert incoming.folder == "All Mail"
    with (
        make_source(dovecot, imap_user, folders=("\\Junk",)) as source,
        pytest.raises(SourceError, match=r"SPECIAL-USE attribute \\Junk"),
    ):
        source.fetch(None)


def test_a_missing_folder_raises_source_error_naming_it(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin
) -> None:
    admin.append("INBOX", build_reply(message_id="<m1@prospect.example>"))
    with make_source(dovecot, imap_user, folders=("INBOX", "Nope")) as source:
        cursor = source.initial_cursor()
        with pytest.raises(SourceError, match="'Nope' cannot be opened") as caught:
            source.fetch(cursor)
        assert caught.value.source == source.name
        assert caught.value.__cause__ is not None
        admin.create("Nope")  # the host fixes the configuration: nothing was lost
        assert len(source.fetch(cursor).messages) == 1


# --------------------------------------------------------------------------------------------
# Windows, since, UIDVALIDITY
# --------------------------------------------------------------------------------------------


def test_windows_and_holes_in_the_uids(dovecot: Dovecot, imap_user: str, admin: IMAPAdmin) -> None:
    admin.create("Big")
    for n in range(1, 41):
        admin.append("Big", build_reply(message_id=f"<m{n}@prospect.example>"))
    admin.expunge("Big", range(6, 36))  # a long run of deleted mail
    with make_source(dovecot, imap_user, folders=("Big",), window=4) as source:
        got, cursor = drain(source, None, limit=3)
        assert got == [1, 2, 3, 4, 5, 36, 37, 38, 39, 40]
        assert source.fetch(cursor).messages == ()


def test_since_filters_by_internaldate_only_what_was_there(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin
) -> None:
    now = dt.datetime.now(UTC)
    for n, age in enumerate(
        [dt.timedelta(days=40), dt.timedelta(days=8), dt.timedelta(hours=30)], 1
    ):
        admin.append("INBOX", build_reply(message_id=f"<m{n}@prospect.example>"), when=now - age)
    # Five seconds before `since`: SEARCH SINCE (dates only, a day earlier) finds it, the exact
    # INTERNALDATE check drops it.
    since = now - dt.timedelta(days=7)
    admin.append(
        "INBOX",
        build_reply(message_id="<m4@prospect.example>"),
        when=since - dt.timedelta(seconds=5),
    )
    admin.append(
        "INBOX",
        build_reply(message_id="<m5@prospect.example>"),
        when=since + dt.timedelta(seconds=5),
    )
    with make_source(dovecot, imap_user) as source:
        cursor = source.initial_cursor(since)
        admin.append(
            "INBOX",
            build_reply(message_id="<m6@prospect.example>"),
            when=now - dt.timedelta(days=90),
        )
        assert drain(source, cursor, limit=1)[0] == [3, 5, 6]


def test_uidvalidity_change_rescans_the_folder_without_duplicate_events(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin, campaign: Campaign
) -> None:
    admin.create("Replies")
    for n in range(5):
        admin.append("Replies", campaign.reply(n))
    with make_source(dovecot, imap_user, folders=("Replies",)) as source:
        poll_until_done(campaign.tracker, source)
        cursor = campaign.store.load_cursor(source.name)
        assert cursor is not None
        admin.recreate("Replies")  # a new UIDVALIDITY, the same messages
        admin.append("Replies", campaign.reply(5))
        batch = source.fetch(cursor)
        assert batch.rescan is True
        assert len(batch.messages) == 6  # the window again: the ledger drops the old ones
        poll_until_done(campaign.tracker, source)
        admin.append("Replies", campaign.reply(6))
        poll_until_done(campaign.tracker, source)
    campaign.assert_exactly_once(range(7))


# --------------------------------------------------------------------------------------------
# Bodies by the batch
# --------------------------------------------------------------------------------------------


class Commands:
    """Counts the IMAP commands sent (each takes a tag) from its creation on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent = 0
        new_tag = imaplib.IMAP4._new_tag  # type: ignore[attr-defined]  # private: no stubs

        def counted(imap: imaplib.IMAP4) -> bytes:
            self.sent += 1
            tag: bytes = new_tag(imap)
            return tag

        monkeypatch.setattr(imaplib.IMAP4, "_new_tag", counted)


def test_fetch_bodies_reads_a_folder_in_one_command(
    dovecot: Dovecot,
    imap_user: str,
    admin: IMAPAdmin,
    campaign: Campaign,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin.create("Replies")
    for n in range(3):
        admin.append("INBOX", campaign.reply(n))
    for n in range(3, 5):
        admin.append("Replies", campaign.reply(n))
    with make_source(dovecot, imap_user, folders=("INBOX", "Replies")) as source:
        messages = list(source.fetch(None).messages)
        assert len(messages) == 5
        wanted = [messages[4], messages[0], messages[3], messages[2]]
        commands = Commands(monkeypatch)
        bodies = source.fetch_bodies(wanted)
        # Per folder, a NOOP or EXAMINE (to see expunges, Rule 7) and one UID FETCH.
        assert commands.sent == 4
    for message, body in zip(wanted, bodies, strict=True):
        assert body.startswith(message.data.rstrip(b"\r\n"))
        assert b"Could we talk" in body


def test_a_poll_asks_for_its_bodies_in_a_few_commands(
    dovecot: Dovecot,
    imap_user: str,
    admin: IMAPAdmin,
    campaign: Campaign,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in range(30):
        unrelated = build_reply(
            in_reply_to=f"<x{n}@elsewhere.example>", from_="x@elsewhere.example"
        )
        admin.append("INBOX", campaign.reply(n) if n % 3 else unrelated)
    with make_source(dovecot, imap_user) as source:
        commands = Commands(monkeypatch)
        result = campaign.tracker.poll(source)
        assert (result.seen, result.matched, result.batches) == (30, 20, 1)
        # Listing and reading the header blocks, then the 20 replies' bodies together: a
        # body by itself would be two commands each.
        assert commands.sent <= 8, commands.sent
    campaign.assert_exactly_once([n for n in range(30) if n % 3])


# --------------------------------------------------------------------------------------------
# Failures: restart, kick, deleted mail, TLS, login
# --------------------------------------------------------------------------------------------


def test_a_server_restart_mid_sync_loses_nothing(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin, campaign: Campaign
) -> None:
    for n in range(30):
        admin.append("INBOX", campaign.reply(n))
    with make_source(dovecot, imap_user) as source:
        first = campaign.tracker.poll(source, limit=5, max_batches=2)
        assert (first.batches, first.events, first.errors) == (2, 10, ())
        dovecot.restart()  # every connection drops; the source's is found dead and reopened
        poll_until_done(campaign.tracker, source, limit=5)
        admin.append("INBOX", campaign.reply(30))
        dovecot.restart()
        poll_until_done(campaign.tracker, source, limit=5)
    campaign.assert_exactly_once(range(31))


def test_a_connection_dropped_mid_fetch_loses_nothing(
    dovecot: Dovecot,
    imap_user: str,
    admin: IMAPAdmin,
    campaign: Campaign,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in range(12):
        admin.append("INBOX", campaign.reply(n))
    with make_source(dovecot, imap_user) as source:
        # The 4th FETCH (headers of the second batch, or a body) meets a kicked connection.
        kick_before(
            monkeypatch, dovecot, imap_user, "fetch", call=4, when=lambda c: c is not admin._client
        )
        failed = campaign.tracker.poll(source, limit=4)
        assert len(failed.errors) == 1
        assert "abort" in failed.errors[0]
        assert not source.connected  # dropped, to be opened again
        poll_until_done(campaign.tracker, source, limit=4)
    campaign.assert_exactly_once(range(12))


def test_fetch_body_of_a_message_deleted_meanwhile(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin, campaign: Campaign
) -> None:
    """SourceError, as the port says; the next poll goes on without the deleted message."""
    uids = [admin.append("INBOX", campaign.reply(n)) for n in range(4)]
    with make_source(dovecot, imap_user) as source:
        batch = source.fetch(None)
        admin.expunge("INBOX", [uids[1]])
        with pytest.raises(SourceError, match="no longer in IMAP folder 'INBOX'"):
            source.fetch_body(batch.messages[1])
        assert b"Could we talk" in source.fetch_body(batch.messages[2])  # the connection is fine
        poll_until_done(campaign.tracker, source)
    campaign.assert_exactly_once([0, 2, 3])


def test_fetch_body_after_the_folder_was_replaced(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin
) -> None:
    admin.create("Replies")
    admin.append("Replies", build_reply(message_id="<m1@prospect.example>"))
    with make_source(dovecot, imap_user, folders=("Replies",)) as source:
        (incoming,) = source.fetch(None).messages
        admin.recreate("Replies")
        with pytest.raises(SourceError, match="UIDVALIDITY of IMAP folder 'Replies' changed"):
            source.fetch_body(incoming)


def test_implicit_tls_and_starttls(dovecot: Dovecot, imap_user: str, admin: IMAPAdmin) -> None:
    dovecot.require_tls()
    admin.append("INBOX", build_reply(message_id="<m1@prospect.example>"))
    context = dovecot.ssl_context()
    with make_source(
        dovecot, imap_user, ssl=True, port=dovecot.ssl_port, ssl_context=context
    ) as source:
        (incoming,) = source.fetch(None).messages
        assert b"Could we talk" in source.fetch_body(incoming)
    with make_source(dovecot, imap_user, starttls=True, ssl_context=context) as source:
        assert source.port == dovecot.port
        assert len(source.fetch(None).messages) == 1


def test_an_unverified_certificate_fails_without_falling_back(
    dovecot: Dovecot, imap_user: str
) -> None:
    dovecot.require_tls()
    for kwargs in ({"ssl": True, "port": dovecot.ssl_port}, {"starttls": True}):
        with make_source(dovecot, imap_user, **kwargs) as source:  # Python's default CAs
            with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED") as caught:
                source.fetch(None)
            assert isinstance(caught.value.__cause__, OSError)


def test_xoauth2_asks_the_host_for_a_token_at_each_connection(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin
) -> None:
    """Dovecot's static passdb takes the password as the XOAUTH2 / OAUTHBEARER token."""
    tokens: list[str] = []

    def token() -> str:
        tokens.append(dovecot.password)
        return dovecot.password

    admin.append("INBOX", build_reply(message_id="<m1@prospect.example>"))
    for mechanism in ("XOAUTH2", "OAUTHBEARER"):
        with make_source(
            dovecot, imap_user, password=None, oauth2_token=token, oauth2_mechanism=mechanism
        ) as source:
            cursor = source.fetch(None).cursor
            dovecot.kick(imap_user)
            assert source.fetch(cursor).messages == ()  # reconnected, with a new token
    assert len(tokens) == 4


def test_a_failed_login_is_reported_and_not_retried_at_once(
    dovecot: Dovecot, imap_user: str
) -> None:
    clock = [0.0]
    connections: list[Any] = []

    def connect() -> Any:
        client = imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
        connections.append(client)
        return client

    with make_source(
        dovecot,
        imap_user,
        password="wrong",  # noqa: S106 (the point of the test)
        monotonic=lambda: clock[0],
        login_retry_delay=60,
        client_factory=connect,
    ) as source:
        with pytest.raises(
            SourceError, match=f"IMAP login failed for user '{imap_user}'"
        ) as caught:
            source.fetch(None)
        assert "[AUTHENTICATIONFAILED] Authentication failed." in str(caught.value)
        assert caught.value.source == source.name
        clock[0] = 59.0
        with pytest.raises(SourceError, match=r"next attempt in 1 s"):
            source.fetch(None)
        assert len(connections) == 1  # no attempt was made
        clock[0] = 60.0
        with pytest.raises(SourceError, match="IMAP login failed"):
            source.fetch(None)
        assert len(connections) == 2


# --------------------------------------------------------------------------------------------
# IDLE
# --------------------------------------------------------------------------------------------


def test_idle_wakes_when_mail_arrives(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin, campaign: Campaign
) -> None:
    with make_source(dovecot, imap_user) as source:
        cursor = source.fetch(None).cursor
        assert source.wait(cursor, 0.2) is False

        def deliver() -> None:
            time.sleep(0.3)  # the source is IDLE by then
            admin.append("INBOX", campaign.reply(0))

        thread = threading.Thread(target=deliver)
        started = time.monotonic()
        thread.start()
        try:
            assert source.wait(cursor, 20) is True
        finally:
            thread.join()
        assert time.monotonic() - started < 5  # Dovecot notifies within a second here
        poll_until_done(campaign.tracker, source)
    campaign.assert_exactly_once([0])


def test_wake_and_close_from_another_thread_interrupt_idle(
    dovecot: Dovecot, imap_user: str
) -> None:
    with make_source(dovecot, imap_user) as source:
        cursor = source.fetch(None).cursor
        timer = threading.Timer(0.3, source.wake)
        started = time.monotonic()
        timer.start()
        assert source.wait(cursor, 20) is True
        assert time.monotonic() - started < 3
        timer.join()
        assert source.fetch(cursor).messages == ()  # the connection is still good

        timer = threading.Timer(0.3, source.close)
        started = time.monotonic()
        timer.start()
        assert source.wait(cursor, 20) is False
        timer.join()
        assert time.monotonic() - started < 3
        assert source.closed
        assert not source.connected


# --------------------------------------------------------------------------------------------
# A big folder
# --------------------------------------------------------------------------------------------


def test_a_10000_message_folder_is_read_once_in_windows(
    dovecot: Dovecot, imap_user: str, admin: IMAPAdmin
) -> None:
    total = 10_000
    admin.create("Big")
    template = build_reply(message_id="<m{n}@prospect.example>").replace(b"{n}", b"%d")
    written = dovecot.write_messages(
        imap_user,
        (template % n for n in range(1, total + 1)),
        folder="Big",
        received=dt.datetime.now(UTC) - dt.timedelta(days=1),
        step=dt.timedelta(seconds=0),
    )
    assert written == total
    admin.client.select_folder("Big", readonly=True)  # let Dovecot index the new files
    admin.client.unselect_folder()
    seen: list[int] = []
    with make_source(dovecot, imap_user, folders=("Big",)) as source:
        cursor = None
        batches = 0
        while True:
            batch = source.fetch(cursor, limit=500)
            seen += ids_of(batch.messages)
            cursor, batches = batch.cursor, batches + 1
            if not batch.more:
                break
        assert len(cursor) < 200  # the cursor does not grow with the folder
    assert batches == total // 500
    assert seen == list(range(1, total + 1))  # each once, oldest first


def ids_of(messages: tuple[Any, ...]) -> list[int]:
    out = []
    for incoming in messages:
        start = incoming.data.index(b"Message-ID: <m") + len(b"Message-ID: <m")
        out.append(int(incoming.data[start : incoming.data.index(b"@", start)]))
    return out
