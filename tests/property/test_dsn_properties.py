"""Properties of replytrack.dsn: analyze_report never raises, whatever the bytes."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from replytrack.dsn import Report, analyze_report
from replytrack.headers import parse_headers

QUICK = settings(max_examples=150, deadline=None)

# Pieces of real reports, so random inputs reach the deep branches and not only the fast exit.
PIECES = [
    b"From: MAILER-DAEMON@mx.example.net\n",
    b"From: <>\n",
    b"Subject: Undelivered Mail Returned to Sender\n",
    b"X-Failed-Recipients: a@b.example\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\n",
    b"Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n",
    b"Content-Type: message/delivery-status\n",
    b"Content-Type: message/rfc822\n",
    b"Content-Type: text/rfc822-headers\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"\n",
    b"--b\n",
    b"--b--\n",
    b"Final-Recipient: rfc822; a@b.example\n",
    b"Original-Recipient: rfc822;\n",
    b"Action: failed\n",
    b"Action: delayed\n",
    b"Status: 5.1.1\n",
    b"Status: 4.\n",
    b"Diagnostic-Code: smtp; 550 5.7.1 blocked\n",
    b"Disposition: automatic-action/MDN-sent-automatically; deleted\n",
    b"Feedback-Type: abuse\n",
    b"Message-ID: <x@y>\n",
    b"<a@b.example>: host said: 550 User unknown\n",
    b"--- Below this line is a copy of the message.\n",
    b"\xff\xfe\x00=?utf-8?b?\n",
]


def _analyze(data: bytes) -> object:
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    return analyze_report(message, parse_headers(data))


@QUICK
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = _analyze(data)
    assert result is None or isinstance(result, Report)


@QUICK
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=40))
def test_report_shaped_garbage_never_raises(pieces: list[bytes]) -> None:
    result = _analyze(b"".join(pieces))
    assert result is None or isinstance(result, Report)
    if isinstance(result, Report) and result.bounce is not None:
        for r in result.bounce.recipients:
            assert r.permanent == bool(r.status and r.status.startswith("5"))
