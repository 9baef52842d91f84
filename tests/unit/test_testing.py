"""The builders in replytrack.testing produce realistic, deterministic mail."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest

from replytrack.headers import parse_headers
from replytrack.testing import (
    OOO_LANGUAGES,
    build_auto_reply,
    build_bounce,
    build_out_of_office,
    build_reply,
    format_date,
)

SEND = "<send-42@mail.sales.example>"


@pytest.mark.parametrize(
    "build",
    [build_reply, build_out_of_office, build_auto_reply],
    ids=lambda f: f.__name__,
)
def test_answers_carry_date_id_and_threading_headers(build: object) -> None:
    raw = build(in_reply_to=SEND)  # type: ignore[operator]
    assert isinstance(raw, bytes)
    assert b"\r\n" in raw  # wire format
    h = parse_headers(raw)
    assert h.defects == ()
    assert h.message_id
    assert h.date is not None
    assert h.in_reply_to == ("send-42@mail.sales.example",)
    assert h.references == ("send-42@mail.sales.example",)
    assert h.from_
    assert h.to


def test_builders_are_deterministic_and_ids_differ_between_messages() -> None:
    assert build_reply() == build_reply()
    assert (
        parse_headers(build_reply()).message_id != parse_headers(build_reply(body="x")).message_id
    )


def test_reply_overrides() -> None:
    when = dt.datetime(2027, 5, 4, 12, 0, tzinfo=dt.timezone.utc)
    raw = build_reply(
        message_id="own@customer.example",
        references=["<root@mail.sales.example>"],
        cc=["Sam <sam@customer.example>"],
        date=when,
        html=True,
        headers={"X-Mailer": "Test"},
    )
    h = parse_headers(raw)
    assert h.message_id == "own@customer.example"
    assert h.references == ("root@mail.sales.example", "send-1@mail.sales.example")
    assert h.cc[0].addr == "sam@customer.example"
    assert h.date == when
    assert h.get("X-Mailer") == "Test"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"


@pytest.mark.parametrize("language", OOO_LANGUAGES)
def test_out_of_office_subject_is_localised_and_encoded(language: str) -> None:
    raw = build_out_of_office(language=language)
    subject = parse_headers(raw).subject
    assert subject is not None
    assert subject.endswith(": Quick question")
    assert parse_headers(raw).get("Auto-Submitted") == "auto-replied"
    assert parse_headers(build_out_of_office(auto_submitted=False)).get("Auto-Submitted") is None


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "Wednesday 3 March"),
        ("de", "03.03.2027"),
        ("fr", "mercredi 3 mars"),
        ("es", "3 de marzo"),
        ("da", "3. marts"),
        ("fi", "3.3.2027"),
        ("ja", "3月3日"),
    ],
)
def test_format_date_writes_dates_the_local_way(language: str, expected: str) -> None:
    assert format_date(language, dt.date(2027, 3, 3)) == expected


def test_unknown_language_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        build_out_of_office(language="xx")


def test_bounce_is_an_rfc_3464_report_with_the_original_headers() -> None:
    raw = build_bounce(
        recipients=("a@customer.example", "b@customer.example"), original_message_id=SEND
    )
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert raw.count(b"Final-Recipient: rfc822;") == 2
    assert b"Status: 5.1.1" in raw
    assert b"Message-ID: " + SEND.encode() in raw
    assert parse_headers(raw).from_[0].local == "MAILER-DAEMON"


def test_bounce_can_return_the_whole_original() -> None:
    raw = build_bounce(original_body="Hi Jo")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts[-1] == "message/rfc822"
