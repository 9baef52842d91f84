"""Quickstart: stamp an outgoing email, process the reply, and watch the hooks fire.

Run it with ``python examples/quickstart.py``. Everything stays in memory: a `MemoryStore`
instead of SQLite, and the reply is handed to ``tracker.process`` instead of being polled from a
mailbox.
"""

from __future__ import annotations

import os
from email.message import EmailMessage

from replytrack import MemoryStore, MessageIdGenerator, ReplyEvent, ReplyTracker
from replytrack.testing import build_reply


def stop_campaign(event: ReplyEvent) -> None:
    """Your campaign engine: end (or pause) the sequence of ``event.ref``."""
    # Delivery is at least once: a real host ignores an event_id it has already applied.
    print(f"campaign_stop: {event.action.value} sequence {event.ref} ({event.kind.value})")


def log_to_crm(event: ReplyEvent) -> None:
    """Your CRM: record the reply as an activity."""
    who = event.responder.addr if event.responder else "unknown"
    print(
        f"crm_log: {event.kind.value} from {who}: {event.body_text.splitlines()[0]!r}"
        if event.body_text
        else f"crm_log: {event.kind.value} from {who}"
    )


store = MemoryStore()
tracker = ReplyTracker(
    store,
    # In production the secret comes from your secret store; rotate by appending a new key.
    MessageIdGenerator("mail.sales.example", secret=os.urandom(32)),
    campaign_stop=stop_campaign,
    crm_log=log_to_crm,
    own_addresses=["rep@sales.example"],
)

# 1. Before sending, stamp the message: it gets a signed Message-ID and is recorded.
outgoing = EmailMessage()
outgoing["From"] = "Rep <rep@sales.example>"
outgoing["To"] = "Jo Prospect <jo@customer.example>"
outgoing["Subject"] = "Quick question"
outgoing.set_content("Hi Jo, do you have 15 minutes this week?")
sent = tracker.stamp(outgoing, ref="campaign-42:prospect-7")
print(f"sent {outgoing['Message-ID']} for {sent.ref}")

# 2. The reply arrives (here built by replytrack.testing; a mailbox source in production).
reply = build_reply(in_reply_to=sent.message_id, from_="Jo Prospect <jo@customer.example>")
events = tracker.process(reply)

# 3. process() returned the event after the hooks ran; processing again changes nothing.
for event in events:
    print(f"event {event.event_id}: {event.kind.value} -> {event.action.value}")
print(f"processed again: {len(tracker.process(reply))} new events")
store.close()
