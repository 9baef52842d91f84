"""Properties of classify(): it never raises, whatever the input, and always says why."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replytrack.classify import Classification, Kind, classify
from replytrack.ooo import find_return_date

QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_FIELDS = st.sampled_from(
    [
        "Subject",
        "Auto-Submitted",
        "X-Autoreply",
        "Precedence",
        "Return-Path",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Date",
        "In-Reply-To",
        "List-Id",
        "X-MS-Exchange-Inbox-Rules-Loop",
        "From",
    ]
)
_WORDS = st.sampled_from(
    [
        "Automatic reply:",
        "Out of Office",
        "multipart/report; report-type=delivery-status; boundary=b",
        "multipart/mixed; boundary=",
        "text/plain; charset=x-unknown",
        "base64",
        "quoted-printable",
        "auto-replied",
        "<>",
        "back on 3/14",
        "bis 31.02.",
        "=?utf-8?b?w6k=?=",
        "--b",
        "\n",
        "I am currently out of the office",
        "until Monday 3 March 2027",
        "3月14日より出社",
    ]
)
_TEXT = st.lists(st.one_of(_WORDS, st.text(max_size=20)), max_size=12).map(" ".join)


def _assert_shape(c: Classification) -> None:
    assert isinstance(c.kind, Kind)
    assert c.reasons
    assert all(isinstance(r, str) for r in c.reasons)
    assert c.return_date is None or isinstance(c.return_date, dt.date)


@QUICK
@given(st.binary(max_size=2000))
@example(b"")
@example(b"Content-Type: multipart/report; report-type=delivery-status\n\n--")
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    _assert_shape(classify(data))


@QUICK
@given(st.text(max_size=2000))
def test_never_raises_on_arbitrary_text(data: str) -> None:
    _assert_shape(classify(data))


@QUICK
@given(st.lists(st.tuples(_FIELDS, _TEXT), max_size=10), _TEXT)
def test_never_raises_on_mail_shaped_input(fields: list[tuple[str, str]], body: str) -> None:
    head = "".join(f"{name}: {value}\n" for name, value in fields)
    data = f"{head}\n{body}"
    _assert_shape(classify(data))
    _assert_shape(classify(data.encode("utf-8", "surrogatepass")))


@QUICK
@given(_TEXT, st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(9998, 12, 1)))
def test_return_date_search_never_raises(text: str, reference: dt.date) -> None:
    found = find_return_date(text, reference=reference, languages=("en",))
    assert found is None or isinstance(found, dt.date)
