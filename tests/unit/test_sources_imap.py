"""IMAPSource with a stub client: what a real Dovecot cannot show.

Gmail's extensions (X-GM-EXT-1: ``\\All``, X-GM-LABELS, X-GM-THRID, X-GM-MSGID), the backoff
timings, servers that leave UIDNEXT out or answer ``n:*`` with the newest message, the number
of commands per window, cursor validation and misuse. The stub answers in IMAPClient's shapes,
as checked against IMAPClient 4.1 on Dovecot: ``fetch`` gives ``{uid: {b"SEQ": n,
b"BODY[HEADER.FIELDS (MESSAGE-ID ...)]": bytes, b"INTERNALDATE": aware datetime, b"FLAGS":
(bytes, ...)}}``, ``select_folder`` gives ``{b"UIDVALIDITY": int, b"UIDNEXT": int, ...}``.
Everything a real server can show is tested on Dovecot (``tests/integration``).
"""

from __future__ import annotations

import datetime as dt
import imaplib
import importlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest

from harnesses import ids, message
from replytrack.errors import ConfigError, SourceError
from replytrack.sources.base import IncomingMessage

imapclient = pytest.importorskip("imapclient", reason="the imap extra is not installed")

# After the extra's check (E402). imapclient ships no py.typed and no stubs: Any here.
from imapclient.exceptions import LoginError  # type: ignore[import-untyped]  # noqa: E402
from imapclient.fixed_offset import FixedOffset  # type: ignore[import-untyped]  # noqa: E402

from replytrack.sources import imap as imap_module  # noqa: E402
from replytrack.sources.imap import IMAPSource  # noqa: E402

UTC = dt.timezone.utc
PASSWORD = "secret"  # noqa: S105 (a stub's)
WRONG = "wrong"
NOW = dt.datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# The stub
# --------------------------------------------------------------------------------------------


class Msg:
    def __init__(
        self,
        data: bytes,
        *,
        when: dt.datetime,
        flags: tuple[bytes, ...],
        labels: tuple[bytes | int, ...],
        msgid: int,
        thrid: int,
    ) -> None:
        self.data, self.when, self.flags = data, when, flags
        self.labels, self.msgid, self.thrid = labels, msgid, thrid


class Folder:
    def __init__(self, uv: int, flags: tuple[bytes, ...] = ()) -> None:
        self.uv = uv
        self.flags = flags
        self.messages: dict[int, Msg] = {}
        self.next_uid = 1


def header_fields(data: bytes, names: list[str]) -> bytes:
    """What a server answers to BODY[HEADER.FIELDS (names)]: those fields, then CRLF."""
    wanted = {n.lower() for n in names}
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    out, keep = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = line.split(b":", 1)[0].decode().lower() in wanted
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


class FakeServer:
    """Folders, messages and a log of every command of every connection."""

    password = PASSWORD

    def __init__(self, *, gmail: bool = False, idle: bool = True) -> None:
        self.gmail = gmail
        caps = [b"IMAP4REV1", b"UIDPLUS"]
        if idle:
            caps.append(b"IDLE")
        if gmail:
            caps.append(b"X-GM-EXT-1")
        self.capabilities = tuple(caps)
        self.folders: dict[str, Folder] = {"INBOX": Folder(1000)}
        self.commands: list[tuple[Any, ...]] = []
        self.clients: list[FakeClient] = []
        self.connect_failures: list[BaseException] = []
        self.fail_on: dict[str, BaseException] = {}  # command name -> exception, once
        self.send_uidnext = True
        self.star_quirk = False  # every UID range search also returns the newest UID
        self.idle_script: list[list[Any]] = []
        self.next_msgid = 1_700_000_000_000_000_000

    def deliver(
        self,
        data: bytes,
        *,
        folder: str = "INBOX",
        when: dt.datetime = NOW,
        flags: Iterable[bytes] = (),
        labels: Iterable[bytes | int] = (),
        thrid: int = 42,
    ) -> int:
        box = self.folders[folder]
        uid = box.next_uid
        box.next_uid += 1
        self.next_msgid += 1
        box.messages[uid] = Msg(
            data,
            when=when,
            flags=tuple(flags),
            labels=tuple(labels),
            msgid=self.next_msgid,
            thrid=thrid,
        )
        return uid

    def factory(self) -> FakeClient:
        if self.connect_failures:
            raise self.connect_failures.pop(0)
        client = FakeClient(self)
        self.clients.append(client)
        return client

    def names(self) -> list[str]:
        return [c[0] for c in self.commands]


class FakeSocket:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def settimeout(self, value: float | None) -> None:
        self.timeouts.append(value)


class FakeClient:
    """IMAPClient's interface and return shapes, on a `FakeServer`."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.normalise_times = True
        self.selected: Folder | None = None
        self.selected_uv = 0
        self.readonly: list[bool] = []
        self.closed = False
        self.logged_out = False
        self.sock = FakeSocket()

    def _cmd(self, name: str, *args: Any) -> None:
        if self.closed:
            raise imaplib.IMAP4.abort("socket error: EOF")
        self.server.commands.append((name, *args))
        failure = self.server.fail_on.pop(name, None)
        if failure is not None:
            if isinstance(failure, (imaplib.IMAP4.abort, OSError)):
                self.closed = True
            raise failure

    def capabilities(self) -> tuple[bytes, ...]:
        return self.server.capabilities

    def starttls(self, ssl_context: Any = None) -> None:
        self._cmd("STARTTLS")

    def login(self, username: str, password: str) -> bytes:
        self._cmd("LOGIN", username)
        if password != self.server.password:
            raise LoginError("b'[AUTHENTICATIONFAILED] Authentication failed.'")
        return b"Logged in"

    def oauth2_login(self, user: str, access_token: str, mech: str = "XOAUTH2") -> bytes:
        self._cmd("XOAUTH2", user, access_token)
        return b"Logged in"

    def oauthbearer_login(self, identity: str, access_token: str) -> bytes:
        self._cmd("OAUTHBEARER", identity, access_token)
        return b"Logged in"

    def list_folders(self, directory: str = "", pattern: str = "*") -> list[Any]:
        self._cmd("LIST")
        return [(box.flags, b"/", name) for name, box in self.server.folders.items()]

    def select_folder(self, folder: str, readonly: bool = False) -> dict[bytes, Any]:
        self._cmd("EXAMINE" if readonly else "SELECT", folder)
        self.readonly.append(readonly)
        box = self.server.folders.get(folder)
        if box is None:
            self.selected = None
            raise imaplib.IMAP4.error(f"select failed: Mailbox doesn't exist: {folder}")
        self.selected, self.selected_uv = box, box.uv
        info: dict[bytes, Any] = {
            b"EXISTS": len(box.messages),
            b"RECENT": 0,
            b"UIDVALIDITY": box.uv,
            b"FLAGS": (b"\\Answered", b"\\Seen"),
            b"READ-ONLY": [b""],
        }
        if self.server.send_uidnext:
            info[b"UIDNEXT"] = box.next_uid
        return info

    def noop(self) -> tuple[bytes, list[Any]]:
        self._cmd("NOOP")
        if self.selected is not None and self.selected.uv != self.selected_uv:
            return b"NOOP completed", [
                (b"OK", b"[UIDVALIDITY %d] UIDs renumbered" % self.selected.uv)
            ]
        return b"NOOP completed", []

    def search(self, criteria: list[Any]) -> list[int]:
        self._cmd("SEARCH", *criteria)
        assert self.selected is not None
        box = self.selected
        uids = sorted(box.messages)
        top = uids[-1] if uids else 0
        assert criteria[0] == "UID"
        spec = criteria[1]
        if spec == "*":
            found = [top] if top else []
        else:
            lo, hi = spec.split(":")
            low = int(lo)
            high = top if hi == "*" else int(hi)
            found = [u for u in uids if min(low, high) <= u <= max(low, high)]
            if (hi == "*" or self.server.star_quirk) and top and top not in found:
                found.append(top)  # RFC 3501 6.4.8: n:* includes the newest, even below n
        if "SINCE" in criteria:
            day = criteria[criteria.index("SINCE") + 1]
            found = [u for u in found if box.messages[u].when.date() >= day]
        return found

    def fetch(self, messages: list[int], data: list[str]) -> dict[int, dict[bytes, Any]]:
        self._cmd("FETCH", list(messages), tuple(data))
        assert self.selected is not None
        out: dict[int, dict[bytes, Any]] = {}
        for seq, uid in enumerate(messages, 1):
            msg = self.selected.messages.get(uid)
            if msg is None:
                continue
            item: dict[bytes, Any] = {b"SEQ": seq}
            for name in data:
                if name.startswith("BODY.PEEK[HEADER.FIELDS ("):
                    fields = name[len("BODY.PEEK[HEADER.FIELDS (") : -2].split()
                    key = ("BODY[HEADER.FIELDS (" + " ".join(fields).upper() + ")]").encode()
                    item[key] = header_fields(msg.data, fields)
                elif name == "BODY.PEEK[HEADER]":
                    item[b"BODY[HEADER]"] = msg.data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                elif name == "BODY.PEEK[]":
                    item[b"BODY[]"] = msg.data
                elif name == "INTERNALDATE":
                    # normalise_times=False: aware, in the server's zone (here UTC+1).
                    assert self.normalise_times is False
                    item[b"INTERNALDATE"] = msg.when.astimezone(FixedOffset(60))
                elif name == "FLAGS":
                    item[b"FLAGS"] = (b"\\Recent", *msg.flags)
                elif name == "X-GM-LABELS":
                    item[b"X-GM-LABELS"] = msg.labels
                elif name == "X-GM-MSGID":
                    item[b"X-GM-MSGID"] = msg.msgid
                elif name == "X-GM-THRID":
                    item[b"X-GM-THRID"] = msg.thrid
                else:
                    raise AssertionError(f"unexpected FETCH item {name}")
            out[uid] = item
        return out

    def idle(self) -> None:
        self._cmd("IDLE")

    def idle_check(self, timeout: float | None = None) -> list[Any]:
        if self.closed:
            return []
        if self.server.idle_script:
            return self.server.idle_script.pop(0)
        time.sleep(timeout or 0)
        return []

    def idle_done(self) -> tuple[bytes, list[Any]]:
        self._cmd("DONE")
        return b"Idle terminated", []

    def socket(self) -> FakeSocket:
        return self.sock

    def logout(self) -> bytes:
        self._cmd("LOGOUT")
        self.logged_out = self.closed = True
        return b"Logging out"

    def shutdown(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(server: FakeServer, **kwargs: Any) -> IMAPSource:
    kwargs.setdefault("password", server.password)
    kwargs.setdefault("clock", lambda: NOW)
    return IMAPSource(
        "imap.example.com", username="rep@example.com", client_factory=server.factory, **kwargs
    )


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


# --------------------------------------------------------------------------------------------
# Reading: headers first, windows, n:*, UIDNEXT
# --------------------------------------------------------------------------------------------


def test_the_first_pass_reads_header_fields_and_leaves_the_folder_read_only(
    server: FakeServer,
) -> None:
    server.deliver(message(1), flags=[b"\\Flagged"])
    with make(server) as source:
        (incoming,) = source.fetch(None).messages
        assert incoming.complete is False
        assert incoming.data.endswith(b"\r\n\r\n")
        assert b"Could we talk" not in incoming.data
        assert incoming.labels == ("\\Flagged",)  # \Recent belongs to a session
        assert incoming.folder == "INBOX"
        assert incoming.source_id == "INBOX;UIDVALIDITY=1000/;UID=1"
        assert incoming.received_at == NOW
        assert incoming.received_at.tzinfo is UTC
        assert b"Could we talk" in source.fetch_body(incoming)
    client = server.clients[0]
    assert set(client.readonly) == {True}  # EXAMINE, never SELECT
    fetches = [c for c in server.commands if c[0] == "FETCH"]
    header_item = fetches[0][2][0]
    assert header_item.startswith("BODY.PEEK[HEADER.FIELDS (Message-ID In-Reply-To ")
    assert header_item.endswith(" X-Replytrack-ID)]")
    assert fetches[1][2] == ("BODY.PEEK[]",)
    assert client.logged_out


def test_whole_header_blocks_when_header_fields_is_none(server: FakeServer) -> None:
    server.deliver(message(1))
    with make(server, header_fields=None) as source:
        (incoming,) = source.fetch(None).messages
    assert incoming.data == message(1).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"Subject: x\r\n\r\n", b"Subject: x\r\n\r\n"),
        (b"Subject: x\r\n", b"Subject: x\r\n\r\n"),
        (b"Subject: x\n", b"Subject: x\n\n"),
        (b"Subject: x", b"Subject: x\r\n\r\n"),
        (b"", b"\r\n"),
        (None, b"\r\n"),
    ],
)
def test_the_header_block_always_ends_with_its_empty_line(
    block: bytes | None, expected: bytes
) -> None:
    item = {b"SEQ": 1, b"BODY[HEADER.FIELDS (SUBJECT)]": block}
    assert imap_module._header_block(item) == expected


def test_large_folders_are_fetched_in_windows(server: FakeServer) -> None:
    for n in range(1, 36):
        server.deliver(message(n))
    with make(server, window=10) as source:
        batch = source.fetch(None, limit=1000)
    assert ids(batch) == list(range(1, 36))
    fetched = [c[1] for c in server.commands if c[0] == "FETCH"]
    assert [len(uids) for uids in fetched] == [10, 10, 10, 5]
    assert "SEARCH" not in server.names()  # dense UIDs: ranges, no listing


def test_holes_in_the_uids_are_skipped_with_doubling_searches(server: FakeServer) -> None:
    for n in range(1, 6):
        server.deliver(message(n))
    server.folders["INBOX"].next_uid = 1_000_006  # a million messages deleted
    for n in range(1_000_006, 1_000_011):
        server.deliver(message(n))
    with make(server) as source:
        batch = source.fetch(None, limit=7)
        assert ids(batch) == [1, 2, 3, 4, 5, 1_000_006, 1_000_007]
        assert batch.more is True
        batch = source.fetch(batch.cursor, limit=7)
        assert ids(batch) == [1_000_008, 1_000_009, 1_000_010]
        assert batch.more is False
    searches = [c[2] for c in server.commands if c[0] == "SEARCH"]
    spans = [int(hi) - int(lo) + 1 for lo, hi in (s.split(":") for s in searches)]
    assert spans[:3] == [250, 500, 1000]  # doubling while a span finds too little ...
    assert max(spans) == 250 * 256  # ... up to a bound on the size of an answer
    assert len(server.commands) < 40  # not 4,000 windows


def test_uids_at_or_below_the_cursor_are_dropped(server: FakeServer) -> None:
    """RFC 3501 6.4.8: ``n:*`` holds the newest message even when its UID is below n."""
    server.star_quirk = True
    server.send_uidnext = False  # the highest UID comes from SEARCH UID *
    for n in range(1, 4):
        server.deliver(message(n))
    with make(server, window=1) as source:
        batch = source.fetch(None)
        assert ids(batch) == [1, 2, 3]
        server.folders["INBOX"].messages.pop(2)  # a hole: the source lists UIDs from now on
        for _ in range(3):
            batch = source.fetch(batch.cursor)
            assert batch.messages == ()
        server.deliver(message(4))
        assert ids(source.fetch(batch.cursor)) == [4]
    assert ("SEARCH", "UID", "*") in server.commands


def test_unsolicited_fetch_responses_are_ignored(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(1, 3):
        server.deliver(message(n))
    original = FakeClient.fetch

    def chatty(self: FakeClient, messages: list[int], data: list[str]) -> Any:
        out = original(self, messages, data)
        out[999] = {b"SEQ": 9, b"FLAGS": (b"\\Seen",)}  # a flag change of another message
        return out

    monkeypatch.setattr(FakeClient, "fetch", chatty)
    with make(server) as source:
        assert ids(source.fetch(None)) == [1, 2]


def test_since_searches_a_day_earlier_and_filters_by_internaldate(server: FakeServer) -> None:
    since = NOW - dt.timedelta(days=7)
    server.deliver(message(1), when=since - dt.timedelta(days=3))
    server.deliver(message(2), when=since - dt.timedelta(hours=2))  # found by SEARCH, dropped
    server.deliver(message(3), when=since + dt.timedelta(minutes=1))
    with make(server) as source:
        cursor = source.initial_cursor(since)
        server.deliver(message(4), when=since - dt.timedelta(days=30))  # late: it counts
        batch = source.fetch(cursor)
        assert ids(batch) == [3, 4]
        assert "since" not in json.loads(batch.cursor)["folders"]["INBOX"]
    searches = [c for c in server.commands if c[0] == "SEARCH"]
    assert searches[0] == ("SEARCH", "UID", "1:3", "SINCE", (since - dt.timedelta(days=1)).date())


# --------------------------------------------------------------------------------------------
# Folders and cursors
# --------------------------------------------------------------------------------------------


def test_folders_are_read_in_order_and_each_keeps_its_uidvalidity(server: FakeServer) -> None:
    server.folders["Archive"] = Folder(7)
    server.deliver(message(1), folder="Archive")
    server.deliver(message(2))
    server.deliver(message(3), folder="Archive")
    with make(server, folders=("INBOX", "Archive")) as source:
        assert source.name == "imap:rep@example.com@imap.example.com#INBOX,Archive"
        first = source.fetch(None, limit=1)
        assert (ids(first), first.more) == ([2], True)
        second = source.fetch(first.cursor, limit=5)
        assert (ids(second), second.more) == ([1, 3], False)
        state = json.loads(second.cursor)
        assert state["folders"] == {
            "INBOX": {"uv": 1000, "last": 1},
            "Archive": {"uv": 7, "last": 2},
        }
        server.folders["Archive"] = Folder(8)  # re-created: only Archive rescans
        server.deliver(message(4), folder="Archive")
        server.deliver(message(5))
        third = source.fetch(second.cursor)
        assert third.rescan is True
        assert ids(third) == [5, 4]


def test_a_folder_added_later_starts_like_the_first_scan(server: FakeServer) -> None:
    server.folders["Archive"] = Folder(7)
    server.deliver(message(1), folder="Archive")
    with make(server) as source:
        cursor = source.fetch(None).cursor
    with make(server, folders=("INBOX", "Archive"), name=source.name) as source:
        assert ids(source.fetch(cursor)) == [1]


@pytest.mark.parametrize(
    "folders",
    [
        [],
        {"INBOX": []},
        {"INBOX": {"uv": 0, "last": 1}},
        {"INBOX": {"uv": 1000, "last": -1}},
        {"INBOX": {"uv": 1000, "last": 1, "since": 5}},
        {"INBOX": {"uv": 1000, "last": 1, "since": 5, "until": 0}},
        {"INBOX": {"uv": 1000, "last": 1, "since": 10**30, "until": 3}},
        {"INBOX": {"uv": True, "last": 1}},
    ],
)
def test_malformed_cursor_fields_rescan(server: FakeServer, folders: object) -> None:
    server.deliver(message(1), when=NOW - dt.timedelta(days=1))
    server.deliver(message(2), when=NOW - dt.timedelta(days=10))
    cursor = json.dumps({"v": 1, "kind": "imap", "since": None, "folders": folders})
    with make(server) as source:
        batch = source.fetch(cursor)
    assert batch.rescan is True
    assert ids(batch) == [1]  # the window, by INTERNALDATE


def test_a_cursor_stays_small(server: FakeServer) -> None:
    for n in range(1, 301):
        server.deliver(message(n))
    with make(server) as source:
        cursor = None
        for _ in range(10):
            cursor = source.fetch(cursor, limit=30).cursor
    assert cursor is not None
    assert len(cursor) < 120


# --------------------------------------------------------------------------------------------
# Gmail
# --------------------------------------------------------------------------------------------


@pytest.fixture
def gmail() -> FakeServer:
    server = FakeServer(gmail=True)
    server.folders["[Gmail]"] = Folder(1, (b"\\HasChildren", b"\\Noselect"))
    # Localized: found by its SPECIAL-USE attribute, not by its name.
    server.folders["[Gmail]/Alle Nachrichten"] = Folder(11, (b"\\All", b"\\HasNoChildren"))
    server.folders["[Gmail]/Gesendet"] = Folder(12, (b"\\HasNoChildren", b"\\Sent"))
    return server


def test_gmail_watches_all_mail_and_skips_the_reps_own_mail(gmail: FakeServer) -> None:
    folder = "[Gmail]/Alle Nachrichten"
    gmail.deliver(message(1), folder=folder, labels=[b"\\Inbox", b"&AMk-quipe", 2024], thrid=77)
    gmail.deliver(message(2), folder=folder, labels=[b"\\Sent"])
    gmail.deliver(message(3), folder=folder, labels=[b"\\Draft"])
    gmail.deliver(message(4), folder=folder, labels=[b"\\Important"], thrid=78)
    with make(gmail) as source:
        assert source.name == "imap:rep@example.com@imap.example.com"
        batch = source.fetch(None)
        assert ids(batch) == [1, 4]
        first = batch.messages[0]
        assert first.folder == folder
        assert first.provider_thread_id == "77"
        assert first.labels == ("\\Inbox", "Équipe", "2024")
        msgid = gmail.folders[folder].messages[1].msgid
        assert (
            first.source_id
            == f"%5BGmail%5D%2FAlle%20Nachrichten;UIDVALIDITY=11/;UID=1;X-GM-MSGID={msgid}"
        )
        assert b"Could we talk" in source.fetch_body(first)
        assert json.loads(batch.cursor)["folders"] == {"\\All": {"uv": 11, "last": 4}}
    fetch_items = next(c[2] for c in gmail.commands if c[0] == "FETCH")
    assert {"X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"} <= set(fetch_items)
    assert gmail.names().count("LIST") == 1


def test_gmail_without_all_mail_is_an_error(gmail: FakeServer) -> None:
    del gmail.folders["[Gmail]/Alle Nachrichten"]
    with make(gmail) as source, pytest.raises(SourceError, match=r"SPECIAL-USE attribute \\All"):
        source.fetch(None)


def test_gmail_extensions_can_be_turned_off(gmail: FakeServer) -> None:
    gmail.deliver(message(1), labels=[b"\\Sent"])
    with make(gmail, gmail=False) as source:
        (incoming,) = source.fetch(None).messages
    assert incoming.provider_thread_id is None
    assert "X-GM-MSGID" not in incoming.source_id
    assert "LIST" not in gmail.names()


# --------------------------------------------------------------------------------------------
# Login, connections, backoff
# --------------------------------------------------------------------------------------------


def test_xoauth2_asks_for_a_token_at_every_connection(server: FakeServer) -> None:
    tokens = iter(["t1", "t2", "t3"])
    server.deliver(message(1))
    with make(server, password=None, oauth2_token=lambda: next(tokens)) as source:
        cursor = source.fetch(None).cursor
        server.clients[-1].closed = True  # the server dropped the connection
        assert source.fetch(cursor).messages == ()
    assert [c for c in server.commands if c[0] == "XOAUTH2"] == [
        ("XOAUTH2", "rep@example.com", "t1"),
        ("XOAUTH2", "rep@example.com", "t2"),
    ]
    assert "LOGIN" not in server.names()


def test_oauthbearer(server: FakeServer) -> None:
    with make(
        server, password=None, oauth2_token=lambda: "t", oauth2_mechanism="OAUTHBEARER"
    ) as s:
        s.fetch(None)
    assert ("OAUTHBEARER", "rep@example.com", "t") in server.commands


def test_a_failing_token_callable_is_a_failed_attempt(server: FakeServer) -> None:
    def broken() -> str:
        raise RuntimeError("refresh token revoked")

    with make(server, password=None, oauth2_token=broken, monotonic=Clock()) as source:
        with pytest.raises(SourceError, match=r"oauth2_token callable failed.*revoked"):
            source.fetch(None)
        with pytest.raises(SourceError, match="next attempt in 1 s"):
            source.fetch(None)


def test_backoff_between_failed_connection_attempts(server: FakeServer) -> None:
    clock = Clock()
    server.connect_failures = [ConnectionRefusedError(111, "Connection refused")] * 5
    with make(server, monotonic=clock, reconnect_delay=1, max_reconnect_delay=4) as source:
        delays = []
        for _ in range(5):
            with pytest.raises(SourceError, match=r"cannot connect.*Connection refused") as caught:
                source.fetch(None)
            assert isinstance(caught.value.__cause__, ConnectionRefusedError)
            before = len(server.connect_failures)
            with pytest.raises(SourceError, match=r"next attempt in \d+ s") as fast:
                source.fetch(None)  # too early: no attempt made
            assert len(server.connect_failures) == before
            assert isinstance(fast.value.__cause__, ConnectionRefusedError)
            delay = float(re.search(r"in (\d+) s", str(fast.value)).group(1))  # type: ignore[union-attr]
            delays.append(delay)
            clock.now += delay
        assert delays == [1, 2, 4, 4, 4]  # doubling, capped
        assert source.fetch(None).messages == ()  # success resets the count
        server.connect_failures = [OSError("boom")]
        server.clients[-1].closed = True  # dropped: reconnecting fails once more
        with pytest.raises(SourceError, match=r"cannot connect.*boom"):
            source.fetch(None)
        with pytest.raises(SourceError, match="next attempt in 1 s"):
            source.fetch(None)


def test_a_failed_login_waits_at_least_the_login_retry_delay(server: FakeServer) -> None:
    clock = Clock()
    with make(server, password=WRONG, monotonic=clock, login_retry_delay=60) as source:
        with pytest.raises(SourceError) as caught:
            source.fetch(None)
        assert str(caught.value) == (
            "IMAP login failed for user 'rep@example.com' on imap.example.com: "
            "[AUTHENTICATIONFAILED] Authentication failed."
        )
        assert isinstance(caught.value.__cause__, LoginError)
        assert server.clients[0].closed  # the socket is not left open
        clock.now = 59.5
        with pytest.raises(SourceError, match=r"login failed.*next attempt in 0 s"):
            source.fetch(None)
        assert len(server.clients) == 1
        clock.now = 60
        with pytest.raises(SourceError, match="login failed"):
            source.fetch(None)
        assert len(server.clients) == 2


def test_a_connection_found_dead_is_reopened_once_at_once(server: FakeServer) -> None:
    server.deliver(message(1))
    with make(server) as source:
        cursor = source.fetch(None).cursor
        server.deliver(message(2))
        server.fail_on["EXAMINE"] = imaplib.IMAP4.abort("socket error: EOF")  # idle too long
        assert ids(source.fetch(cursor)) == [2]
    assert len(server.clients) == 2


def test_a_connection_lost_during_a_fetch_fails_that_fetch(server: FakeServer) -> None:
    for n in range(1, 4):
        server.deliver(message(n))
    with make(server) as source:
        cursor = source.fetch(None, limit=1).cursor
        server.fail_on["FETCH"] = imaplib.IMAP4.abort("socket error: EOF")
        with pytest.raises(
            SourceError, match=r"IMAP fetch on imap\.example\.com failed"
        ) as caught:
            source.fetch(cursor)
        assert isinstance(caught.value.__cause__, imaplib.IMAP4.abort)
        assert not source.connected
        assert ids(source.fetch(cursor)) == [2, 3]


def test_a_protocol_error_drops_the_connection(server: FakeServer) -> None:
    server.deliver(message(1))
    with make(server) as source:
        source.fetch(None)
        server.fail_on["EXAMINE"] = imapclient.exceptions.ProtocolError("garbage")
        with pytest.raises(SourceError, match="ProtocolError: garbage"):
            source.fetch(None)
        assert not source.connected
        assert server.clients[0].closed


def test_a_missing_folder_keeps_the_connection(server: FakeServer) -> None:
    with make(server, folders=("Nope",)) as source:
        for _ in range(2):
            with pytest.raises(SourceError, match="'Nope' cannot be opened") as caught:
                source.fetch(None)
            assert isinstance(caught.value.__cause__, imaplib.IMAP4.error)
        assert source.connected
    assert len(server.clients) == 1


def test_fetch_body_checks_uidvalidity_and_existence(server: FakeServer) -> None:
    server.deliver(message(1))
    server.deliver(message(2))
    with make(server) as source:
        first, second = source.fetch(None).messages
        del server.folders["INBOX"].messages[2]
        with pytest.raises(SourceError, match="message 2 is no longer in IMAP folder 'INBOX'"):
            source.fetch_body(second)
        server.folders["INBOX"].uv = 1001
        with pytest.raises(
            SourceError, match=r"UIDVALIDITY of IMAP folder 'INBOX' changed \(1000 -> 1001\)"
        ):
            source.fetch_body(first)
        with pytest.raises(SourceError, match="not a message of an IMAP source"):
            source.fetch_body(
                IncomingMessage(b"Subject: x\r\n\r\n", "maildir-key", complete=False)
            )


def test_fetch_body_reuses_the_open_folder(server: FakeServer) -> None:
    server.deliver(message(1))
    with make(server) as source:
        (incoming,) = source.fetch(None).messages
        source.fetch_body(incoming)
    assert server.names() == ["LOGIN", "EXAMINE", "FETCH", "NOOP", "FETCH", "LOGOUT"]


def test_an_idle_poll_is_one_command(server: FakeServer) -> None:
    server.deliver(message(1))
    with make(server) as source:
        cursor = source.fetch(None).cursor
        before = len(server.commands)
        assert source.fetch(cursor).messages == ()
        assert server.commands[before:] == [("EXAMINE", "INBOX")]


# --------------------------------------------------------------------------------------------
# IDLE
# --------------------------------------------------------------------------------------------


def test_wait_idles_until_exists(server: FakeServer) -> None:
    with make(server) as source:
        cursor = source.fetch(None).cursor
        source.wait_interval = 0.01  # type: ignore[misc]
        server.idle_script = [[], [(b"OK", b"Still here")], [(3, b"EXISTS")]]
        assert source.wait(cursor, 5) is True
        assert server.names()[-3:] == ["EXAMINE", "IDLE", "DONE"]
        assert source.connected


def test_wait_returns_at_once_when_mail_is_past_the_cursor(server: FakeServer) -> None:
    with make(server) as source:
        cursor = source.fetch(None).cursor
        server.deliver(message(1))
        assert source.wait(cursor, 5) is True
        assert "IDLE" not in server.names()


def test_a_bye_during_idle_drops_the_connection_and_sleeps(server: FakeServer) -> None:
    with make(server) as source:
        cursor = source.fetch(None).cursor
        source.wait_interval = 0.01  # type: ignore[misc]
        server.idle_script = [[(b"BYE", b"Server", b"shutting", b"down.")]]
        started = time.monotonic()
        assert source.wait(cursor, 0.1) is False
        assert time.monotonic() - started >= 0.09
        assert not source.connected
        assert server.clients[0].closed
        assert source.fetch(cursor).messages == ()  # a new connection


def test_wait_sleeps_when_the_server_has_no_idle() -> None:
    server = FakeServer(idle=False)
    with make(server) as source:
        cursor = source.fetch(None).cursor
        started = time.monotonic()
        assert source.wait(cursor, 0.1) is False
        assert time.monotonic() - started >= 0.09
        assert "IDLE" not in server.names()


def test_wait_does_not_reconnect_while_backing_off(server: FakeServer) -> None:
    server.connect_failures = [OSError("down")]
    with make(server, monotonic=Clock()) as source:
        with pytest.raises(SourceError):
            source.fetch(None)
        assert source.wait(None, 0.05) is False
    assert server.clients == []


def test_wake_interrupts_idle_from_another_thread(server: FakeServer) -> None:
    with make(server) as source:
        cursor = source.fetch(None).cursor
        timer = threading.Timer(0.1, source.wake)
        timer.start()
        started = time.monotonic()
        assert source.wait(cursor, 10) is True
        timer.join()
        assert time.monotonic() - started < 1  # within a slice of wait_interval (0.25 s)
        assert server.names()[-1] == "DONE"


def test_close_from_another_thread_ends_idle_and_logs_out(server: FakeServer) -> None:
    with make(server) as source:
        cursor = source.fetch(None).cursor
        timer = threading.Timer(0.1, source.close)
        timer.start()
        assert source.wait(cursor, 10) is False
        timer.join()
        assert server.names()[-2:] == ["DONE", "LOGOUT"]


# --------------------------------------------------------------------------------------------
# Misuse, the extra
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"password": None},
        {"oauth2_token": lambda: "t"},
        {"password": None, "oauth2_token": "not callable"},
        {"password": None, "oauth2_token": lambda: "t", "oauth2_mechanism": "PLAIN"},
        {"port": 0},
        {"port": "993"},
        {"ssl": "yes"},
        {"ssl": False, "ssl_context": __import__("ssl").create_default_context()},
        {"ssl_context": object()},
        {"folders": "INBOX"},
        {"folders": []},
        {"folders": ["INBOX", "INBOX"]},
        {"folders": [""]},
        {"timeout": 0},
        {"window": 0},
        {"window": 2.5},
        {"header_fields": "Subject"},
        {"header_fields": ["Sub ject"]},
        {"header_fields": []},
        {"reconnect_delay": 10, "max_reconnect_delay": 1},
        {"login_retry_delay": -1},
        {"gmail": "auto"},
        {"monotonic": 5},
        {"client_factory": "x"},
    ],
)
def test_misuse_raises_config_error(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("password", "secret")
    with pytest.raises(ConfigError):
        IMAPSource("imap.example.com", username="rep", **kwargs)


@pytest.mark.parametrize("host", ["", "  "])
def test_a_host_and_a_user_are_needed(host: str) -> None:
    with pytest.raises(ConfigError):
        IMAPSource(host, username="rep", password=PASSWORD)
    with pytest.raises(ConfigError):
        IMAPSource("imap.example.com", username=host, password=PASSWORD)


def test_ports_and_names_by_default(caplog: pytest.LogCaptureFixture) -> None:
    assert IMAPSource("h.example", username="u", password=PASSWORD).port == 993
    assert IMAPSource("h.example", username="u", password=PASSWORD, starttls=True).port == 143
    assert not caplog.records
    plain = IMAPSource("h.example", username="u", password=PASSWORD, ssl=False)
    assert plain.port == 143
    assert "plain text" in caplog.text  # a warning, not a refusal: the host asked for it
    assert plain.name == "imap:u@h.example"
    assert (
        IMAPSource("127.0.0.1", username="u", password=PASSWORD, folders=["INBOX"]).name
        == "imap:u@127.0.0.1"
    )


def test_a_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imapclient", None)  # import imapclient now fails
    monkeypatch.delitem(sys.modules, "replytrack.sources.imap")
    with pytest.raises(ImportError, match=re.escape("pip install 'replytrack[imap]'")):
        importlib.import_module("replytrack.sources.imap")
