"""The hooks a host implements: stop or pause a campaign, log an activity in the CRM.

A hook is any callable taking one `ReplyEvent`: a plain function, a bound method, or an object
with ``__call__`` (stamina's ``RetryHook`` pattern). The tracker calls it after the event is
safely in the store's outbox.

Rule 1: delivery is at least once. A hook may see the same event again (after a crash between
        the call and the outbox update, or a retry after the host's own partial failure);
        ``event.event_id`` is stable, so the host drops what it has already applied.
Rule 2: a hook that raises never breaks the processing of other messages: its event stays in the
        outbox and is retried with exponential backoff by `ReplyTracker.retry_pending`, then
        parked as dead after the maximum number of attempts.
Rule 3: a hook should be quick and idempotent; long work belongs in the host's own queue,
        keyed by ``event.event_id``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from replytrack.events import ReplyEvent

__all__ = ["CRMLogHook", "CampaignStopHook"]


@runtime_checkable
class CampaignStopHook(Protocol):
    """Stop or pause the campaign a reply belongs to.

    Receives the events whose ``action`` is ``Action.STOP`` (end the sequence for
    ``event.ref``: a human reply, a hard bounce, a complaint) or ``Action.PAUSE`` (hold it until
    ``event.resume_on``: an out-of-office). ``event.scope`` says whether the host should stop the
    prospect only or the whole account.

    The host must make it idempotent on ``event.event_id`` (delivery is at least once). If it
    raises, the event stays in the outbox and is delivered again later.
    """

    def __call__(self, event: ReplyEvent, /) -> None:
        """Apply `event` to the campaign."""


@runtime_checkable
class CRMLogHook(Protocol):
    """Log a correlated message as an activity in the CRM (a Salesforce Task, ...).

    Receives every correlated event unless the policy narrows it (``Policy.crm_kinds``).
    ``event.body_text`` holds the reply's decoded plain text when it was available.

    The host must make it idempotent on ``event.event_id`` (delivery is at least once). If it
    raises, the event stays in the outbox and is delivered again later.
    """

    def __call__(self, event: ReplyEvent, /) -> None:
        """Record `event` in the CRM."""
