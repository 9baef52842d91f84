"""A host's own mailbox API as a replytrack source: subclass `BaseSource`, write two methods.

Run it with ``python examples/custom_source.py``. ``HelpdeskInbox`` stands for whatever API the
host already has (a ticketing system, an internal mail store); its messages are numbered in
arrival order, which is all a cursor needs.
"""

from __future__ import annotations

import datetime as _dt
import os
from email.message import EmailMessage

from replytrack import MemoryStore, MessageIdGenerator, ReplyEvent, ReplyTracker
from replytrack.sources import BaseSource, Batch, IncomingMessage
from replytrack.testing import build_bounce, build_reply


class HelpdeskInbox:
    """The host's existing API (a stand-in): messages numbered from 1 in arrival order."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def list_after(self, number: int, limit: int) -> list[tuple[int, bytes]]:
        return list(enumerate(self.messages, start=1))[number : number + limit]


class HelpdeskSource(BaseSource):
    """Reads `HelpdeskInbox`; the cursor is the number of the last message read."""

    kind = "helpdesk"

    def __init__(self, inbox: HelpdeskInbox) -> None:
        super().__init__("helpdesk:inbox")
        self.inbox = inbox

    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        # This API cannot filter by date; starting at 0 reads everything, which never misses.
        return self._dump_cursor({"last": 0})

    def _fetch(self, cursor: str, limit: int) -> Batch:
        last = int(self._load_cursor(cursor)["last"])
        rows = self.inbox.list_after(last, limit + 1)  # one extra tells whether there is more
        messages = tuple(IncomingMessage(data, str(n)) for n, data in rows[:limit])
        if messages:
            last = int(messages[-1].source_id)
        return Batch(messages, self._dump_cursor({"last": last}), more=len(rows) > limit)


def on_stop(event: ReplyEvent) -> None:
    print(f"stop {event.ref}: {event.kind.value} from {event.responder}")


store = MemoryStore()
tracker = ReplyTracker(
    store, MessageIdGenerator("mail.sales.example", secret=os.urandom(32)), campaign_stop=on_stop
)
outgoing = EmailMessage()
outgoing["From"] = "Rep <rep@sales.example>"
outgoing["To"] = "jo@customer.example, max@other.example"
outgoing["Subject"] = "Quick question"
outgoing.set_content("Hi, do you have 15 minutes this week?")
sent = tracker.stamp(outgoing, ref="c42:p7")

inbox = HelpdeskInbox()
inbox.messages.append(build_reply(in_reply_to=sent.message_id))
with HelpdeskSource(inbox) as source:
    print(tracker.poll(source))
    inbox.messages.append(
        build_bounce(recipients=["max@other.example"], original_message_id=sent.message_id)
    )
    print(tracker.poll(source))  # resumes after message 1: only the bounce is new
store.close()
