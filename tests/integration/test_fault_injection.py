"""Faults of the store under a polling tracker: the error surfaces, nothing is lost, the next
poll recovers.

The source side (an IMAP connection reset mid-fetch, a server restart, a UIDVALIDITY change)
is exercised against a real Dovecot in ``test_imap_dovecot.py``; the crash side (SIGKILL at
random points) in ``test_crash_safety.py``. Here: SQLite "database is locked" and a full disk
when the outbox is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from replytrack import ReplyTracker, SQLiteStore
from replytrack.store import SentMessage
from replytrack.testing import CapturingHook, MemorySource, build_reply

REP = "rep@sales.example"


def outgoing(n: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Rep <{REP}>"
    message["To"] = f"p{n}@prospect.example"
    message["Subject"] = f"Quick question {n}"
    message.set_content("Hi")
    return message


class Setup:
    def __init__(self, path: Path, store: SQLiteStore) -> None:
        self.path = path
        self.store = store
        self.hook = CapturingHook()
        self.tracker = ReplyTracker(store, campaign_stop=self.hook, own_addresses=[REP])
        self.sends: list[SentMessage] = [
            self.tracker.stamp(outgoing(n), f"c1:p{n}") for n in range(10)
        ]
        self.inbox = MemorySource(name="inbox")
        for n, sent in enumerate(self.sends):
            self.inbox.add(
                build_reply(in_reply_to=sent.message_id, message_id=f"<r{n}@prospect.example>")
            )

    def refs(self) -> list[str]:
        return sorted(e.ref for e in self.hook.events)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    path = tmp_path / "s.db"
    with SQLiteStore(path, timeout=0.2) as store:
        yield Setup(path, store)


def test_a_locked_database_stops_the_poll_and_the_next_one_recovers(setup: Setup) -> None:
    setup.tracker.poll(setup.inbox, limit=4, max_batches=1)
    blocker = sqlite3.connect(setup.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        failed = setup.tracker.poll(setup.inbox, limit=4)
        assert failed.batches == 0
        assert len(failed.errors) == 1
        assert "locked" in failed.errors[0]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert setup.tracker.poll(setup.inbox, limit=4).errors == ()
    assert setup.refs() == sorted(f"c1:p{n}" for n in range(10))  # each once, none lost


class FullDiskStore(SQLiteStore):
    """An SQLite store on a disk with no room left: the file may not grow by one page.

    SQLite then answers SQLITE_FULL ("database or disk is full") at the first write that
    needs a new page, exactly as when the disk is full.
    """

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn


def test_a_full_disk_on_the_outbox_write_loses_nothing(setup: Setup) -> None:
    setup.store.close()
    with FullDiskStore(setup.path) as full:
        tracker = ReplyTracker(full, campaign_stop=setup.hook, own_addresses=[REP])
        failed = tracker.poll(setup.inbox, limit=10)
    assert failed.batches == 0
    assert len(failed.errors) == 1
    assert "full" in failed.errors[0]
    assert setup.hook.events == []  # nothing was committed, so no hook ran
    with SQLiteStore(setup.path) as store:  # room again
        tracker = ReplyTracker(store, campaign_stop=setup.hook, own_addresses=[REP])
        assert tracker.poll(setup.inbox).errors == ()
    assert setup.refs() == sorted(f"c1:p{n}" for n in range(10))
