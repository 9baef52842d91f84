"""A host's own mailbox as a source: subclass BaseSource, write two methods."""

from __future__ import annotations

import datetime as dt

from typing_extensions import assert_type

from replytrack import MemoryStore, PollResult, ReplyTracker, Worker
from replytrack.sources import BaseSource, Batch, IncomingMessage, MailboxSource, MaildirSource


class HelpdeskSource(BaseSource):
    kind = "helpdesk"

    def __init__(self, rows: list[bytes]) -> None:
        super().__init__("helpdesk:inbox", rescan_window=dt.timedelta(days=3))
        self.rows = rows

    def _initial_cursor(self, since: dt.datetime | None) -> str:
        return self._dump_cursor({"last": 0})

    def _fetch(self, cursor: str, limit: int) -> Batch:
        last = int(self._load_cursor(cursor)["last"])
        rows = self.rows[last : last + limit]
        messages = tuple(
            IncomingMessage(data, str(last + n), provider_thread_id=None)
            for n, data in enumerate(rows, start=1)
        )
        return Batch(messages, self._dump_cursor({"last": last + len(rows)}), more=False)


class WrongSource(BaseSource):
    kind = "wrong"

    def _initial_cursor(self, since: dt.datetime | None) -> str:
        return ""

    def _fetch(self, cursor: str, limit: int) -> list[bytes]:  # type: ignore
        return []


def poll_all(tracker: ReplyTracker) -> int:
    sources: list[MailboxSource] = [HelpdeskSource([]), MaildirSource("Maildir")]
    seen = 0
    for source in sources:
        with source:
            result = tracker.poll(source, limit=50)
            assert_type(result, PollResult)
            seen += result.seen
    with HelpdeskSource([]) as helpdesk:
        assert_type(helpdesk, HelpdeskSource)
        batch = helpdesk.fetch(None)
        assert_type(batch.messages, tuple[IncomingMessage, ...])
    tracker.poll("INBOX")  # type: ignore
    return seen


def run_worker() -> None:
    tracker = ReplyTracker(MemoryStore())
    worker = Worker(tracker, [HelpdeskSource([])], lease=dt.timedelta(minutes=1))
    result = worker.run_once()
    assert_type(result.events, int)
