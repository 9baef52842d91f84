"""Hooks as hosts write them: a plain function, a class with __call__, a bound method."""

from __future__ import annotations

import datetime as dt
from typing import Any

from typing_extensions import assert_type

from replytrack import (
    Action,
    Address,
    CampaignStopHook,
    CRMLogHook,
    Kind,
    MatchMethod,
    MemoryStore,
    MessageIdGenerator,
    ReplyEvent,
    ReplyTracker,
    Role,
    SentMessage,
)
from replytrack.dsn import Bounce


def stop_sequence(event: ReplyEvent) -> None:
    assert_type(event.event_id, str)
    assert_type(event.kind, Kind)
    assert_type(event.action, Action)
    assert_type(event.resume_on, dt.date | None)
    assert_type(event.ref, str)
    assert_type(event.sent, SentMessage | None)
    assert_type(event.responder, Address | None)
    assert_type(event.role, Role)
    assert_type(event.method, MatchMethod)
    assert_type(event.received_at, dt.datetime | None)
    assert_type(event.bounce, Bounce | None)
    assert_type(event.body_text, str | None)
    assert_type(event.reasons, tuple[str, ...])
    assert_type(event.scope, str)


class SalesforceTaskHook:
    """A CRM hook that keeps its client and its settings."""

    def __init__(self, api_version: str) -> None:
        self.api_version = api_version
        self.created: list[dict[str, Any]] = []

    def __call__(self, event: ReplyEvent) -> None:
        self.created.append({"Subject": event.subject, "Key": event.event_id})


class Campaigns:
    def on_reply(self, event: ReplyEvent) -> None:
        if event.action is Action.PAUSE and event.resume_on is not None:
            assert_type(event.resume_on, dt.date)


def wrong_hook(ref: str) -> None:
    """Takes a ref instead of an event: not a hook."""


def build_tracker() -> ReplyTracker:
    campaigns = Campaigns()
    stop: CampaignStopHook = stop_sequence
    crm: CRMLogHook = SalesforceTaskHook("v60.0")
    tracker = ReplyTracker(
        MemoryStore(),
        MessageIdGenerator("mail.sales.example", secret=[b"old" * 11, b"new" * 11]),
        campaign_stop=stop,
        crm_log=crm,
        own_addresses=["rep@sales.example"],
    )
    ReplyTracker(MemoryStore(), campaign_stop=campaigns.on_reply, crm_log=print)
    ReplyTracker(MemoryStore(), campaign_stop=lambda event: None)
    ReplyTracker(MemoryStore(), campaign_stop=wrong_hook)  # type: ignore
    return tracker


def process(tracker: ReplyTracker, raw: bytes) -> list[str]:
    events = tracker.process(raw)
    assert_type(events, list[ReplyEvent])
    retried = tracker.retry_pending()
    assert_type(retried.delivered, int)
    payload: bytes = events[0].to_json()
    assert_type(ReplyEvent.from_json(payload), ReplyEvent)
    tracker.process(42)  # type: ignore
    return [event.event_id for event in events]
