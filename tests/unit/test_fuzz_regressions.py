"""Inputs that fuzzing found breaking a promise of the pure core, kept as regression tests.

Each test names the input class, the promise it broke and the fix. The last tests replay the
atheris harnesses of ``fuzz/`` on their seed corpus without atheris, so that a harness that
stops working - or a seed that starts failing - shows in the ordinary test run.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

from replytrack import dsn
from replytrack.classify import Kind, classify
from replytrack.headers import normalize_msg_id, parse_addresses, parse_headers

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
CEILING_SECONDS = 3.0


# --- encoded-words and report parts that name a codec that is not a text encoding ------------

NOT_TEXT_CODECS = ["base64", "zlib", "rot13", "hex", "uu", "idna", "punycode", "undefined"]


@pytest.mark.parametrize("charset", [*NOT_TEXT_CODECS, "utf-8\x00"])
def test_an_encoded_word_in_a_codec_that_is_not_a_text_encoding_never_raises(
    charset: str,
) -> None:
    """headers Rule 1. codecs.lookup finds bytes-to-bytes codecs too; decoding then raised."""
    data = f"Subject: =?{charset}?q?caf=C3=A9?=\nFrom: =?{charset}?q?Jo?= <jo@x.example>\n\n"
    headers = parse_headers(data.encode("utf-8"))

    assert headers.subject == "café"  # read as UTF-8, the fallback of an unknown charset
    assert headers.get("subject") == "café"
    assert headers.from_[0].name == "Jo"
    assert any("unknown charset" in d for d in headers.defects)


@pytest.mark.parametrize("charset", [*NOT_TEXT_CODECS, "utf-8\x00"])
def test_a_bounce_whose_text_part_names_a_codec_that_is_not_a_text_encoding_is_a_bounce(
    charset: str,
) -> None:
    """dsn Rule 1: the LookupError or ValueError made analyze_report give up on the report."""
    data = (
        "From: MAILER-DAEMON@mx.example\nTo: rep@sales.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        f'--b\nContent-Type: text/plain; charset="{charset}"\n\n'
        "Delivery to jo@customer.example failed: user unknown.\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        "Final-Recipient: rfc822; jo@customer.example\nAction: failed\nStatus: 5.0.0\n"
        "--b--\n"
    ).encode()

    verdict = classify(data)

    assert verdict.kind is Kind.BOUNCE
    assert verdict.bounce is not None
    assert [r.address for r in verdict.bounce.recipients] == ["jo@customer.example"]
    assert verdict.bounce.recipients[0].reason == "userunknown"


@pytest.mark.parametrize("charset", [*NOT_TEXT_CODECS, "utf-8\x00"])
def test_an_out_of_office_whose_body_names_a_codec_that_is_not_a_text_encoding_is_one(
    charset: str,
) -> None:
    """ooo Rule 7: the body read as empty, and the out-of-office was taken for a reply."""
    data = (
        "From: jo@customer.example\nIn-Reply-To: <send-1@mail.sales.example>\n"
        f'Subject: Re: Quick question\nContent-Type: text/plain; charset="{charset}"\n\n'
        "I am currently out of the office with limited access to email. I will be back on "
        "Monday 3 March 2027. For urgent matters please contact my colleague.\n"
    ).encode()

    assert classify(data).kind is Kind.OUT_OF_OFFICE


# --- msg-ids that did not read back as themselves (headers Rule 5) -----------------------------


def test_a_stray_closing_bracket_is_not_part_of_a_bare_id() -> None:
    """Found by fuzz_parse_headers: ``abc@host>`` kept its ">" and read back as another id."""
    headers = parse_headers(b"Message-ID: \x08\x08k2R85CVU014206@sb7.songbird.com>\n\n")

    assert headers.message_id == "\x08\x08k2R85CVU014206@sb7.songbird.com"
    assert normalize_msg_id(f"<{headers.message_id}>") == headers.message_id


@pytest.mark.parametrize(
    "value",
    [
        # Found by fuzz_parse_headers: decoding the inner word leaves an outer one.
        b" <\xcde150t=?utf-7?Q?`Z2bmw6lCwkt=?utf-7?Q?`Z2bmw6lCwk?="
        b"kFrFro\x01\x00O?=kFrFro\x01\x00O K",
        b" <a=?utf-8?q?b=?utf-8?q?c?=d?=e x",
        b" <x=?utf-8?q?=3D=3Futf-8=3Fq=3Fy=3F=3D?= z",
    ],
)
def test_an_id_made_of_nested_encoded_words_reads_back_as_itself(value: bytes) -> None:
    mid = parse_headers(b"Message-ID:" + value + b"\n\n").message_id

    assert mid is None or normalize_msg_id(f"<{mid}>") == mid


@pytest.mark.parametrize(
    "value",
    [
        # Found by the thorough hypothesis profile (test_address_lists_never_raise...): an
        # unterminated "<" read up to the comma, whose quote kept the space before it.
        '0 <"@0 ,  0@[192.0.2.1]',
        '<"@0 , >',
        "<jo@x.example , bo@y.example",
    ],
)
def test_an_address_never_keeps_white_space_at_its_ends(value: str) -> None:
    for address in parse_addresses(value):
        assert address.addr == address.addr.strip()


# --- bounded work in plain-text bounces (dsn Rule 6) ------------------------------------------


def _plain_bounce(text: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\nTo: rep@sales.example\n"
        f"Subject: Delivery failure\n\n{text}\n"
    ).encode()


def test_a_line_of_dashes_in_a_bounce_costs_linear_time() -> None:
    """The returned-message marker's own dash prefix made 8 KB of "-" take 13 s."""
    data = _plain_bounce("Delivery failed.\n" + "-" * 16_000 + "\njo@customer.example\n")

    start = time.perf_counter()
    classify(data)
    assert time.perf_counter() - start < CEILING_SECONDS


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("----- Below this line is a copy of the message.", True),
        ("--- forwarded message ---", True),
        ("> ---- Original message follows", True),
        ("forwarded message ---", False),  # this marker needs its leading dashes
    ],
)
def test_returned_message_markers_with_dashes_are_still_found(line: str, found: bool) -> None:
    report, returned = dsn._cut_returned(f"Delivery failed.\n{line}\nFrom: rep@sales.example\n")

    assert bool(returned) is found
    assert report.startswith("Delivery failed.")


@pytest.mark.parametrize("address", ["a@b.", "x a@b.example ", "u{}@b.example "])
def test_a_bounce_text_is_read_for_a_bounded_number_of_addresses(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 480 KB line of addresses held 120,000 of them, each read with several patterns."""
    calls: list[str] = []
    real = dsn._clean_address

    def counting(raw: str) -> str | None:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(dsn, "_clean_address", counting)
    line = "".join(address.format(i) for i in range(480_000 // len(address)))

    verdict = classify(_plain_bounce("Delivery to the following recipients failed:\n" + line))

    assert verdict.kind is Kind.BOUNCE
    assert len(calls) <= dsn._MAX_ADDRESSES_READ + 10


def test_a_long_line_of_addresses_in_a_bounce_costs_linear_time() -> None:
    """Each address re-read the whole line before it: 32 KB of "a@b." took 13 s."""
    data = _plain_bounce("Delivery to the following recipients failed:\n" + "a@b." * 16_000)

    start = time.perf_counter()
    classify(data)
    assert time.perf_counter() - start < CEILING_SECONDS


class _Searcher(Protocol):
    """What dsn reads of a reason pattern: a compiled pattern, or dsn's own two-piece one."""

    def search(self, text: str, /) -> re.Match[str] | None: ...


class _CountingPattern:
    """Wraps a reason pattern; records the length of every text it searches."""

    def __init__(self, pattern: _Searcher, lengths: list[int]) -> None:
        self.pattern = pattern
        self.lengths = lengths

    def search(self, text: str) -> re.Match[str] | None:
        self.lengths.append(len(text))
        return self.pattern.search(text)


def _count_reason_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every reason pattern record the length of each text it searches; an empty cache."""
    lengths: list[int] = []
    counting = tuple((r, _CountingPattern(p, lengths)) for r, p in dsn._REASON_REGEXES)
    monkeypatch.setattr(dsn, "_REASON_REGEXES", counting)
    dsn._cut_text_reason.cache_clear()
    return lengths


def test_a_long_diagnostic_is_read_in_part_by_the_reason_patterns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thirty reason patterns read a 110 KB diagnostic three times: 1.8 s, now 0.1 s."""
    data = (
        "From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        "Final-Recipient: rfc822; jo@customer.example\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 " + "lorem ipsum dolor " * 6_000 + "\n--b--\n"
    ).encode()
    lengths = _count_reason_reads(monkeypatch)

    verdict = classify(data)

    assert verdict.bounce is not None
    assert verdict.bounce.recipients[0].address == "jo@customer.example"
    assert max(lengths) <= dsn._REASON_SCAN_CHARS
    # Each distinct text of the recipient (diagnostic; with its status; with the code) once.
    assert sum(lengths) <= 3 * len(dsn._REASON_REGEXES) * dsn._REASON_SCAN_CHARS


def test_recipients_listed_on_one_long_line_share_one_reading_of_the_reason_patterns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each recipient's text, stripped of its own address only, was read anew: 2 s for 100."""
    line = " ".join(f"u{i}@b.example" for i in range(480_000 // 14))
    data = _plain_bounce("Delivery to the following recipients failed:\n" + line)
    lengths = _count_reason_reads(monkeypatch)

    verdict = classify(data)

    assert verdict.bounce is not None
    assert len(verdict.bounce.recipients) == dsn.MAX_RECIPIENTS
    assert "u7@b.example" not in (verdict.bounce.recipients[0].diagnostic or "")
    # The shared stretch of text, then the shared diagnostic: not one reading per recipient.
    assert sum(lengths) <= 4 * len(dsn._REASON_REGEXES) * dsn._REASON_SCAN_CHARS


# --- the atheris harnesses, replayed without atheris ------------------------------------------


def _harness(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"fuzz_{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def seeds() -> list[tuple[str, bytes]]:
    sys.path.insert(0, str(FUZZ))
    try:
        import _runner  # noqa: PLC0415 - fuzz/ is not a package; found through the line above

        return _runner.corpus_seeds()
    finally:
        sys.path.remove(str(FUZZ))


REGRESSIONS = [
    b"Subject: =?base64?q?abc?=\n\n",
    b"From: =?utf-8\x00?q?Jo?= <jo@x.example>\n\n",
    b"Message-ID: \x08\x08k2R85CVU014206@sb7.songbird.com>\n\n",
    b"=:it\nMessagE-ID: <\xcde150t=?utf-7?Q?`Z2bmw6lCwkt=?utf-7?Q?`Z2bmw6lCwk?=kFrFro\x01\x00O?="
    b"kFrFro\x01\x00O K\n",
]


@pytest.mark.parametrize("target", ["parse_headers", "classify", "correlate", "threadindex"])
def test_every_harness_passes_its_seeds_and_the_regressions(
    target: str, seeds: list[tuple[str, bytes]]
) -> None:
    harness = _harness(target)
    extra = harness.extra_seeds() if hasattr(harness, "extra_seeds") else []

    for _, data in [*seeds, *extra, *((f"regression-{i}", r) for i, r in enumerate(REGRESSIONS))]:
        harness.check(data)
