"""A CRM hook that turns a `ReplyEvent` into a Salesforce-style Task.

Run it with ``python examples/salesforce_hook.py``. The hook builds the payload a host would
POST to ``/services/data/vXX.X/sobjects/Task``; here it only prints it (no network), so the
shape can be checked. Map the ref to your own records: this example assumes refs of the form
``"<campaign>:<contact id>"``.
"""

from __future__ import annotations

import json
import os
from email.message import EmailMessage
from typing import Any

from replytrack import Action, MemoryStore, MessageIdGenerator, ReplyEvent, ReplyTracker
from replytrack.testing import build_out_of_office, build_reply

_STATUS = {Action.STOP: "Completed", Action.PAUSE: "Deferred", Action.LOG_ONLY: "Completed"}


def task_payload(event: ReplyEvent) -> dict[str, Any]:
    """The Task to create for `event`; ``WhoId`` is the contact id taken from the ref."""
    _, _, contact_id = event.ref.rpartition(":")
    received = event.received_at.date().isoformat() if event.received_at else None
    who = event.responder.addr if event.responder else "unknown sender"
    return {
        "Subject": f"Email {event.kind.value.replace('_', '-')}: {event.subject or ''}"[:255],
        "Description": event.body_text or "",
        "WhoId": contact_id,  # a placeholder: your ref-to-Contact mapping goes here
        "ActivityDate": received,
        "Status": _STATUS[event.action],
        "TaskSubtype": "Email",
        # An external id makes the insert idempotent: delivery is at least once.
        "ReplyTrack_Event_Id__c": event.event_id,
        "ReplyTrack_From__c": who,
    }


class SalesforceTaskHook:
    """A `CRMLogHook`: any callable taking one event; a class keeps its client and config."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def __call__(self, event: ReplyEvent) -> None:
        payload = task_payload(event)
        # In production: an upsert on ReplyTrack_Event_Id__c through your Salesforce client;
        # if it raises, replytrack keeps the event and retries it (retry_pending).
        self.created.append(payload)
        print(json.dumps(payload, indent=2, ensure_ascii=False))


store = MemoryStore()
hook = SalesforceTaskHook()
tracker = ReplyTracker(
    store, MessageIdGenerator("mail.sales.example", secret=os.urandom(32)), crm_log=hook
)
outgoing = EmailMessage()
outgoing["From"] = "Rep <rep@sales.example>"
outgoing["To"] = "Jo Prospect <jo@customer.example>"
outgoing["Subject"] = "Quick question"
outgoing.set_content("Hi Jo, do you have 15 minutes this week?")
sent = tracker.stamp(outgoing, ref="c42:003Dn00000AbCdEIAX")

tracker.process(build_out_of_office(language="fr", in_reply_to=sent.message_id))
tracker.process(build_reply(in_reply_to=sent.message_id, body="Yes - Tuesday at 10?\n\nJo"))
print(f"{len(hook.created)} tasks")
store.close()
