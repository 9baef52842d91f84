"""classify(): the public entry point, its contract, and the real-message corpus."""

from __future__ import annotations

import datetime as dt
import email
import email.message
import email.policy
import importlib
import pickle
from pathlib import Path

import attrs
import pytest

from replytrack.classify import MAX_PARSE_BYTES, Classification, Kind, classify
from replytrack.testing import (
    OOO_LANGUAGES,
    build_auto_reply,
    build_bounce,
    build_out_of_office,
    build_reply,
)

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


def test_the_body_read_to_decide_comes_with_the_verdict() -> None:
    reply = classify(build_reply(body="Tuesday at 10 works for me.\n", html=True))
    ooo = classify(build_out_of_office(language="de", return_date=dt.date(2027, 3, 15)))
    bounce = classify(build_bounce())

    assert reply.body_text is not None
    assert reply.body_text.startswith("Tuesday at 10 works for me.")
    assert "<p>" not in reply.body_text  # the text/plain part, not the markup
    assert ooo.body_text is not None
    assert "15" in ooo.body_text
    assert bounce.body_text is None  # decided by the report's structure: the body not read
    assert "body_text" not in repr(reply)


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


# -- the fast path (replytrack.mime) decides like the stdlib parse ---------------------------


def _stdlib_classify(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> Classification:
    """`classify` as it was before replytrack.mime: the fast reader always unsure."""
    with monkeypatch.context() as patch:
        patch.setattr(classify_module.mime, "body_text", lambda data: None)
        return classify(raw)


def _reencoded(raw: bytes, cte: str) -> bytes:
    """Every text part of a built message re-encoded with `cte` (utf-8)."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    for part in message.walk():
        if isinstance(part, email.message.EmailMessage) and part.get_content_maintype() == "text":
            text = part.get_content()
            part.set_content(text, subtype=part.get_content_subtype(), charset="utf-8", cte=cte)
    return message.as_bytes()


def _fast_path_messages() -> list[tuple[str, bytes]]:
    built = [
        ("reply", build_reply()),
        ("reply-html", build_reply(html=True)),
        ("reply-unquoted-html", build_reply(quote=None, html=True)),
        ("auto-reply", build_auto_reply()),
    ]
    for language in OOO_LANGUAGES:
        built.append((f"ooo-{language}", build_out_of_office(language=language)))
        built.append(
            (
                f"ooo-{language}-body-only",
                build_out_of_office(
                    language=language,
                    auto_submitted=False,
                    subject_style="original",
                    in_reply_to=None,
                    return_date=dt.date(2027, 3, 15),
                ),
            )
        )
    return [
        (f"{name}/{cte}", raw if cte == "as-built" else _reencoded(raw, cte))
        for name, raw in built
        for cte in ("as-built", "quoted-printable", "base64", "8bit")
    ]


FAST_PATH_MESSAGES = _fast_path_messages()
CORPUS_MESSAGES = [
    p
    for p in sorted(CORPUS.rglob("*"))
    if p.is_file() and p.suffix not in (".md", ".json", ".py") and not p.name.startswith(".")
]


@pytest.mark.parametrize(
    ("name", "raw"), FAST_PATH_MESSAGES, ids=[name for name, _ in FAST_PATH_MESSAGES]
)
def test_built_messages_classify_alike_with_and_without_the_fast_reader(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: bytes
) -> None:
    """Replies and out-of-office in every language, plain/html, QP/base64: same verdict."""
    assert classify(raw) == _stdlib_classify(monkeypatch, raw)


@pytest.mark.parametrize("path", CORPUS_MESSAGES, ids=lambda p: p.relative_to(CORPUS).as_posix())
def test_corpus_messages_classify_alike_with_and_without_the_fast_reader(
    monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    raw = path.read_bytes()
    assert classify(raw) == _stdlib_classify(monkeypatch, raw)


def test_a_human_reply_is_classified_without_the_stdlib_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No report possible: the body comes from replytrack.mime, no Message is built."""

    def parser_called(raw: bytes) -> None:
        raise AssertionError("the stdlib parser ran")

    monkeypatch.setattr(classify_module, "_parse", parser_called)
    assert classify(build_reply(html=True)).kind is Kind.REPLY
    assert classify(build_out_of_office(language="de")).kind is Kind.OUT_OF_OFFICE


def test_a_possible_report_is_still_parsed_by_the_stdlib(monkeypatch: pytest.MonkeyPatch) -> None:
    def reader_called(data: bytes) -> None:
        raise AssertionError("the fast reader ran")

    monkeypatch.setattr(classify_module.mime, "body_text", reader_called)
    assert classify(build_bounce()).kind is Kind.BOUNCE


def test_malformed_mail_falls_back_to_the_stdlib_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare CR makes the fast reader unsure; the stdlib parse decides, as before."""
    raw = build_out_of_office(language="fr").replace(b"\r\n\r\n", b"\r\n\r", 1)
    assert classify_module.mime.body_text(raw) is None
    assert classify(raw) == _stdlib_classify(monkeypatch, raw)
