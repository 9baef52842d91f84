"""A policy from a host's settings, and code that reads decisions."""

from __future__ import annotations

import datetime as dt

from typing_extensions import assert_type

from replytrack import Action, Correlator, Kind, MemoryStore, Policy, Role, Scope, classify
from replytrack.testing import CapturingHook, MemorySource, build_out_of_office


def from_settings(settings: dict[str, str]) -> Policy:
    return Policy(
        reply_roles={Role.OTHER: Action.LOG_ONLY},
        soft_bounce=settings.get("soft_bounce", "log_only"),
        undated_pause=dt.timedelta(days=3),
        ooo_pause_cap=21,
        scope=Scope.ACCOUNT,
        crm_kinds={Kind.REPLY, "out_of_office"},
    )


def what_came_back(raw: bytes) -> dt.date | None:
    verdict = classify(raw)
    assert_type(verdict.kind, Kind)
    if verdict.bounce is not None:
        return None
    return verdict.return_date


def correlate(raw: bytes) -> str | None:
    match = Correlator(MemoryStore()).correlate(raw)
    if match is None:
        return None
    decision = Policy().decide(match, today=dt.date(2027, 3, 1))
    assert_type(decision.action, Action)
    assert_type(decision.resume_on, dt.date | None)
    return match.ref


def test_doubles() -> list[str]:
    hook = CapturingHook(failures=1)
    source = MemorySource([build_out_of_office(language="de", return_date=dt.date(2027, 3, 15))])
    source.add(b"raw bytes")
    build_out_of_office(language=1)  # type: ignore
    return [event.ref for event in hook.events]
