"""classify(): the public entry point, its contract, and the real-message corpus."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import importlib
import pickle
from pathlib import Path

import attrs
import pytest

from replytrack.classify import MAX_PARSE_BYTES, Classification, Kind, classify
from replytrack.testing import build_bounce, build_out_of_office, build_reply

# The module, not the function re-exported as `replytrack.classify`.
classify_module = importlib.import_module("replytrack.classify")

CORPUS = Path(__file__).parent.parent / "corpus"

# Messages checked by eye: human mail, test messages, spam and list posts, none of them a
# report or an automatic answer. Every one must classify as a reply.
HUMAN = [
    *sorted((CORPUS / "talon" / "standard_replies").glob("*.eml")),
    CORPUS / "talon" / "reply-quotations-share-block.eml",
    *sorted((CORPUS / "django-mailbox").glob("*.eml")),
    *sorted((CORPUS / "mailbits" / "emails").glob("*.eml")),
    *(
        p
        for p in sorted((CORPUS / "flanker").glob("*.eml"))
        if p.name != "disposition-notification.eml"  # an MDN: a receipt
    ),
    *sorted((CORPUS / "flanker" / "spam").glob("*.eml")),
    *sorted((CORPUS / "fast_mail_parser").glob("*.eml")),
    *(
        p
        for p in sorted((CORPUS / "mail-parser").iterdir())
        if p.name != "mail_malformed_2"  # a bounce ("Delivery failure")
    ),
    *(
        p
        for p in sorted((CORPUS / "cpython-test_email").glob("msg_*.txt"))
        # delivery reports and bounces, the dsn module's business
        if p.name not in {"msg_05.txt", "msg_16.txt", "msg_25.txt", "msg_43.txt"}
    ),
]
# Reports from flanker: bounces, a delay, complaints and an MDN.
REPORTS = {
    **{p.name: p for p in sorted((CORPUS / "flanker" / "bounce").glob("*.eml"))},
    "complaint-aol.eml": CORPUS / "flanker" / "complaints" / "aol.eml",
    "complaint-yahoo.eml": CORPUS / "flanker" / "complaints" / "yahoo.eml",
    "disposition-notification.eml": CORPUS / "flanker" / "disposition-notification.eml",
}


def test_kind_values_are_lower_case_names() -> None:
    assert {k.value for k in Kind} == {
        "reply",
        "out_of_office",
        "auto_reply",
        "bounce",
        "delay",
        "complaint",
        "receipt",
    }
    assert all(k.value == k.name.lower() for k in Kind)


def test_classification_is_a_frozen_value_that_pickles() -> None:
    c = Classification(Kind.OUT_OF_OFFICE, return_date=dt.date(2027, 3, 3), reasons=("x",))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.kind = Kind.REPLY  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(c)) == c
    assert hash(c) == hash(Classification(Kind.OUT_OF_OFFICE, None, dt.date(2027, 3, 3), ("x",)))
    assert Classification(Kind.REPLY) == Classification(
        kind=Kind.REPLY,
        bounce=None,
        return_date=None,
        reasons=(),
        original_message_id=None,
        feedback_type=None,
    )


@pytest.mark.parametrize("path", HUMAN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_human_and_ordinary_corpus_messages_are_replies(path: Path) -> None:
    c = classify(path.read_bytes())
    assert c.kind is Kind.REPLY, c.reasons
    assert c.reasons


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_corpus_reports_are_not_replies(name: str) -> None:
    assert classify(REPORTS[name].read_bytes()).kind is not Kind.REPLY


def test_reply_says_why() -> None:
    c = classify(build_reply())
    assert c.kind is Kind.REPLY
    assert c.bounce is None
    assert c.return_date is None
    assert c.original_message_id is None
    assert any("person" in reason for reason in c.reasons)


def test_bytes_str_and_message_input_agree() -> None:
    raw = build_out_of_office(language="de", return_date=dt.date(2027, 3, 15))
    expected = classify(raw)
    assert expected.kind is Kind.OUT_OF_OFFICE
    assert classify(bytearray(raw)) == expected
    assert classify(memoryview(raw)) == expected
    assert classify(raw.decode("utf-8")) == expected
    assert classify(email.message_from_bytes(raw, policy=email.policy.compat32)) == expected
    assert classify(email.message_from_bytes(raw, policy=email.policy.default)) == expected


def test_wrong_input_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        classify(42)  # type: ignore[arg-type]


def test_bounce_is_a_bounce_tied_to_its_send() -> None:
    c = classify(build_bounce(original_message_id="<send-9@mail.sales.example>"))
    assert c.kind is Kind.BOUNCE
    assert c.bounce is not None
    assert c.original_message_id == "send-9@mail.sales.example"
    assert c.reasons


def test_reports_win_over_auto_reply_evidence() -> None:
    """A DSN carries Auto-Submitted too (RFC 3834 §3.1.7); the report decides."""
    assert classify(build_bounce()).kind is Kind.BOUNCE


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [("delayed", "4.4.7", Kind.DELAY), ("delivered", "2.0.0", Kind.RECEIPT)],
)
def test_report_kinds_map_to_kinds(action: str, status: str, kind: Kind) -> None:
    c = classify(build_bounce(action=action, status=status, diagnostic=None))  # type: ignore[arg-type]
    assert c.kind is kind


def test_a_failing_report_analyser_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(classify_module.dsn, "analyze_report", broken)
    c = classify(build_reply(from_="Mail Delivery System <MAILER-DAEMON@mx.example>"))
    assert c.kind is Kind.REPLY
    assert any("RuntimeError" in reason for reason in c.reasons)


def test_huge_attachment_is_read_only_up_to_the_limit() -> None:
    reply = build_reply(body="See the attachment.", quote=None)
    message = email.message_from_bytes(reply, policy=email.policy.default)
    message.make_mixed()
    message.add_attachment(b"\0" * (5 * 1024 * 1024), maintype="application", subtype="zip")
    raw = message.as_bytes()
    assert len(raw) > 10 * MAX_PARSE_BYTES
    assert classify(raw).kind is Kind.REPLY


def test_out_of_office_after_a_huge_header_block_is_still_found() -> None:
    raw = build_out_of_office(headers={"X-Padding": "x" * 70_000})
    assert classify(raw).kind is Kind.OUT_OF_OFFICE


@pytest.mark.parametrize(
    "data",
    [b"", b"\0\xff" * 100, b"Subject: \n\n", "héllo \udcff", b"Content-Type: multipart/mixed\n\n"],
)
def test_garbage_is_a_reply(data: bytes | str) -> None:
    assert classify(data).kind is Kind.REPLY
