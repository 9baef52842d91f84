"""Classification of incoming mail: human reply, out-of-office, auto-reply, bounce and reports.

`classify` is the first question the tracker asks of every correlated message (DESIGN.md, "How a
reply is recognised", step 3): a sales platform must stop a campaign on a human reply or a hard
bounce, pause it on an out-of-office, and only log an auto-reply, a delay or a receipt.

Rule 1: reports win. Delivery status notifications (RFC 3464) and the non-DSN bounce formats,
        delay notices, read receipts (RFC 8098) and feedback reports (RFC 5965) are recognised
        by `replytrack.dsn` first; only mail that is none of these is asked whether it is an
        auto-reply (`replytrack.ooo`, RFC 3834). What is neither is a human reply.
Rule 2: the input is read once and boundedly: the header block by `parse_headers`, the message
        by the standard library's ``compat32`` parser on at most `MAX_PARSE_BYTES` bytes. A
        5 MB attachment costs no more than a short reply; a multipart truncated by the limit
        parses like one with a missing final boundary, which the stdlib tolerates. Mail that
        cannot be a report (`dsn.may_be_report` is false: most human replies) skips the stdlib
        parser: `replytrack.mime` reads the same bytes for the first text part the auto-reply
        detector needs, with the same result, and hands back to the stdlib when unsure.
Rule 3: `classify` never raises on mail. Should an analyser fail on some unforeseen input, the
        failure is written into `Classification.reasons` and the message is a reply: stopping a
        campaign that should have continued is the cheaper error.
Rule 4: `Classification.reasons` always says which evidence decided, so a verdict can be
        audited.
"""

from __future__ import annotations

import datetime as _dt
import email
import email.message
import enum
from typing import Final

import attrs

from replytrack import dsn, mime, ooo
from replytrack.dsn import Bounce
from replytrack.headers import Headers, parse_headers, text_to_bytes

__all__ = ["MAX_PARSE_BYTES", "Classification", "Kind", "classify"]

#: The most bytes of a message handed to the MIME parser. Reports, auto-replies and the parts
#: of a bounce that matter sit at the start; what lies beyond is attachments.
MAX_PARSE_BYTES: Final = 512 * 1024


class Kind(enum.Enum):
    """What an incoming message is."""

    #: A person answered.
    REPLY = "reply"
    #: A vacation or absence notice, possibly with a return date.
    OUT_OF_OFFICE = "out_of_office"
    #: Another automatic answer: ticket acknowledgement, challenge-response ...
    AUTO_REPLY = "auto_reply"
    #: The send could not be delivered (RFC 3464 "failed", or a non-DSN bounce).
    BOUNCE = "bounce"
    #: Delivery is delayed and still being retried (RFC 3464 "delayed").
    DELAY = "delay"
    #: A feedback report: the recipient complained (RFC 5965 ARF).
    COMPLAINT = "complaint"
    #: A read receipt (RFC 8098 MDN) or a "delivered"/"relayed" DSN.
    RECEIPT = "receipt"


_REPORT_KINDS: Final = {
    "bounce": Kind.BOUNCE,
    "delay": Kind.DELAY,
    "receipt": Kind.RECEIPT,
    "complaint": Kind.COMPLAINT,
}


@attrs.frozen
class Classification:
    """The verdict of `classify`.

    Attributes:
        kind: what the message is.
        bounce: the failed or delayed recipients, for kinds `Kind.BOUNCE` and `Kind.DELAY`.
        return_date: for an out-of-office, the first date the sender says they are back.
        reasons: the evidence that decided, human readable, strongest first.
        original_message_id: for a bounce, delay, complaint or receipt, the Message-ID of the
            send it refers to (normalised like `Headers.message_id`), when the report carries
            it. The correlator ties the report to its send with it.
        feedback_type: for a complaint, the RFC 5965 feedback type (``"abuse"``, ``"fraud"``
            ...).
        body_text: the readable text of the body that was read to decide (what
            `replytrack.ooo.body_text` returns), or ``None`` when the body was not read: a
            report decided by its structure, or headers alone. `ReplyTracker` hands it on to
            the event instead of decoding the body a second time. Left out of the repr.
    """

    kind: Kind
    bounce: Bounce | None = None
    return_date: _dt.date | None = None
    reasons: tuple[str, ...] = ()
    original_message_id: str | None = None
    feedback_type: str | None = None
    body_text: str | None = attrs.field(default=None, repr=False)


def classify(
    data: bytes | bytearray | memoryview | str | email.message.Message,
    *,
    headers: Headers | None = None,
) -> Classification:
    """Classify an incoming message: reply, out-of-office, auto-reply, bounce, delay ...

    Args:
        data: the raw message as bytes or str, or a message already parsed by the standard
            library (any policy).
        headers: ``parse_headers(data)`` when the caller already has it (saves parsing twice).

    Returns:
        A `Classification`; ``kind`` is `Kind.REPLY` unless there is evidence of a report or an
        automatic answer, and ``reasons`` names that evidence. Never raises on mail.

    Raises:
        TypeError: `data` is none of the accepted types (a programming error, not bad mail).
    """
    if isinstance(data, email.message.Message):
        headers = headers or parse_headers(data)
        return _classify(headers, data, may_be_report=dsn.may_be_report(headers))
    if isinstance(data, str):
        raw = text_to_bytes(data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise TypeError(f"classify() takes bytes, str or a Message, not {type(data)!r}")
    headers = headers or parse_headers(raw)
    may_be_report = dsn.may_be_report(headers, raw)
    if not may_be_report:
        # Rule 2: no report possible, so only the auto-reply detector reads the body.
        body = mime.body_text(raw[:MAX_PARSE_BYTES])
        if body is not None:
            return _classify(headers, None, may_be_report=False, body=body)
    return _classify(headers, _parse(raw), may_be_report=may_be_report)


def _parse(raw: bytes) -> email.message.Message | None:
    # mime.parse bounds the stdlib parser's quadratic paths: deep nesting, long parameter lists.
    return mime.parse(raw[:MAX_PARSE_BYTES])


def _classify(
    headers: Headers,
    message: email.message.Message | None,
    *,
    may_be_report: bool,
    body: str | None = None,
) -> Classification:
    failures: list[str] = []
    # may_be_report rules reports out from the headers alone, sparing human mail the MIME walk.
    if message is not None and may_be_report:
        try:
            report = dsn.analyze_report(message, headers)
        except Exception as exc:
            report = None
            failures.append(f"report analysis failed ({type(exc).__name__})")
        if report is not None:
            return Classification(
                kind=_REPORT_KINDS.get(report.kind, Kind.BOUNCE),
                bounce=report.bounce,
                reasons=tuple(report.reasons),
                original_message_id=report.original_message_id,
                feedback_type=report.feedback_type,
            )
    read = body is not None or message is not None
    if body is None:
        body = ooo.body_text(message) if message is not None else ""
    verdict = ooo.detect_auto_reply(headers, body=body)
    if verdict is not None:
        return Classification(
            kind=Kind.OUT_OF_OFFICE if verdict.out_of_office else Kind.AUTO_REPLY,
            return_date=verdict.return_date,
            reasons=verdict.reasons,
            body_text=body if read else None,
        )
    return Classification(
        kind=Kind.REPLY,
        reasons=(*failures, "no report, bounce or auto-reply evidence: written by a person"),
        body_text=body if read else None,
    )
