"""The IMAP harness: `IMAPSource` against the session's real Dovecot (``tests/servers.py``).

Mail is delivered with IMAP APPEND (with an INTERNALDATE, so rescan windows can be checked),
through a second connection of the same user (`IMAPAdmin`), which the integration tests use
too. The faults are the server's own: a UIDVALIDITY change is the folder deleted and created
again with the same messages, a dropped connection is ``doveadm kick``, a broken mailbox is
the folder deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import select
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harnesses import Harness, message
from servers import Dovecot

imapclient = pytest.importorskip("imapclient", reason="the imap extra is not installed")

from replytrack.sources.imap import IMAPSource  # noqa: E402 (after the extra's check)

__all__ = ["IMAPAdmin", "IMAPHarness", "kick_before"]

UTC = dt.timezone.utc
FOLDER = "Replies"


class IMAPAdmin:
    """A plain IMAP connection of `user` for the tests' own work: deliver, inspect, break.

    It reconnects by itself after a kick or a restart, which drop it too.
    """

    def __init__(self, dovecot: Dovecot, user: str) -> None:
        self.dovecot = dovecot
        self.user = user
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The logged-in IMAPClient, connected again when the server dropped it."""
        if self._client is not None:
            try:
                self._client.noop()
            except (imaplib.IMAP4.abort, OSError):
                self.close()
        if self._client is None:
            client = imapclient.IMAPClient(
                self.dovecot.host, port=self.dovecot.port, ssl=False, timeout=10
            )
            try:
                client.login(self.user, self.dovecot.password)
            except BaseException:
                client.shutdown()
                raise
            client.normalise_times = False
            self._client = client
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # already dropped by the server
            with contextlib.suppress(OSError):
                client.shutdown()

    def create(self, folder: str) -> None:
        self.client.create_folder(folder)

    def delete(self, folder: str) -> None:
        self.client.delete_folder(folder)

    def append(
        self,
        folder: str,
        data: bytes,
        *,
        when: dt.datetime | None = None,
        flags: Iterable[bytes] = (),
    ) -> int:
        """APPEND `data`; return its UID (UIDPLUS)."""
        response = self.client.append(
            folder, data, flags=tuple(flags), msg_time=when or dt.datetime.now(UTC)
        )
        return int(response.split(b"]")[0].split()[-1])

    def uidvalidity(self, folder: str) -> int:
        return int(self.client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])

    def messages(self, folder: str) -> dict[int, dict[bytes, Any]]:
        """Every message of `folder`: UID -> BODY[], INTERNALDATE, FLAGS (read-only)."""
        client = self.client
        client.select_folder(folder, readonly=True)
        try:
            uids = client.search(["ALL"])
            return client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE", "FLAGS"]) if uids else {}
        finally:
            client.unselect_folder()

    def flags(self, folder: str) -> dict[int, tuple[bytes, ...]]:
        return {uid: item[b"FLAGS"] for uid, item in self.messages(folder).items()}

    def expunge(self, folder: str, uids: Iterable[int]) -> None:
        client = self.client
        client.select_folder(folder)
        try:
            client.delete_messages(list(uids))
            client.expunge()
        finally:
            client.close_folder()

    def recreate(self, folder: str) -> int:
        """Delete `folder` and create it again with the same messages: a new UIDVALIDITY.

        Returns:
            The new UIDVALIDITY (checked to differ from the old one).
        """
        before = self.uidvalidity(folder)
        existing = self.messages(folder)
        kept = [existing[uid] for uid in sorted(existing)]
        self.delete(folder)
        self.create(folder)
        for item in kept:
            flags = [f for f in item[b"FLAGS"] if f.lower() != b"\\recent"]
            self.append(folder, item[b"BODY[]"], when=item[b"INTERNALDATE"], flags=flags)
        after = self.uidvalidity(folder)
        assert after != before, "Dovecot kept the UIDVALIDITY of a re-created folder"
        return after


def kick_before(
    monkeypatch: pytest.MonkeyPatch,
    dovecot: Dovecot,
    user: str,
    method: str,
    *,
    call: int = 1,
    when: Callable[[Any], bool] = lambda client: True,
) -> None:
    """Make the `call`-th call of ``IMAPClient.<method>`` find its connection kicked.

    The kick is `dovecot.kick` (the server drops every connection of `user`); the call then
    goes on and meets the closed connection, as a client does when the server goes away
    between two of its commands. Only clients for which `when` holds count.
    """
    original = getattr(imapclient.IMAPClient, method)
    calls = 0

    def kicked(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        if when(self):
            calls += 1
            if calls == call:
                monkeypatch.setattr(imapclient.IMAPClient, method, original)
                dovecot.kick(user)
                # Wait until the server's BYE or EOF reaches the socket, so the next command
                # surely meets a closed connection.
                select.select([self.socket()], [], [], 5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(imapclient.IMAPClient, method, kicked)


class IMAPHarness(Harness):
    #: The source's call fails on the connection the server closed: imaplib's ``abort``
    #: ("socket error: EOF" or the server's BYE), which is not an OSError.
    fault_type: ClassVar[type[BaseException]] = imaplib.IMAP4.abort

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.dovecot: Dovecot = request.getfixturevalue("dovecot")
        self.user: str = request.getfixturevalue("imap_user")
        self.admin = IMAPAdmin(self.dovecot, self.user)
        self.admin.create(FOLDER)
        self.source = IMAPSource(
            self.dovecot.host,
            port=self.dovecot.port,
            ssl=False,
            username=self.user,
            password=self.dovecot.password,
            folders=(FOLDER,),
            timeout=10,
        )

    def deliver(self, n: int, *, received_at: dt.datetime | None = None) -> None:
        self.admin.append(FOLDER, message(n), when=received_at)

    def invalidate(self, cursor: str) -> str:
        self.admin.recreate(FOLDER)
        return cursor

    def inject_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The fetch's NOOP and SEARCH go through; its FETCH meets the kicked connection.
        admin = self.admin
        kick_before(
            monkeypatch,
            self.dovecot,
            self.user,
            "fetch",
            when=lambda client: client is not admin._client,
        )

    def break_mailbox(self) -> None:
        self.admin.delete(FOLDER)

    def close(self) -> None:
        self.admin.close()
