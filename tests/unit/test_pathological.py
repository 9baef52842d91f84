"""Guards for pathological mail: each test pins one bound that keeps work and memory finite.

A reply tracker reads strangers' mail unattended. The cases are issue 8's: header blocks over
1 MiB, 10,000 References, deeply nested multiparts, a 50 MB attachment, and long runs of
``;``, ``(``, ``=?`` and ``<`` (the standard library's quadratic cases). Each test asserts the
bound *as work* where it can - the input cut at a documented limit, an output of bounded size,
a tracemalloc peak - and otherwise a time ceiling in seconds, far above the milliseconds the
protected code takes (``benchmarks/bench_pathological.py`` measures those) and far below what
the unprotected code takes, so a loaded CI machine does not make them flaky. Each was checked
to fail with its protection removed (``docs/robustness.md`` lists which protects what).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import pytest

from replytrack import mime
from replytrack.classify import MAX_PARSE_BYTES, Kind, classify
from replytrack.correlate import Correlator
from replytrack.headers import (
    KEEP_FIRST_IDS,
    MAX_HEADER_BYTES,
    MAX_IDS_PER_FIELD,
    parse_headers,
)
from replytrack.store import MemoryStore, SentMessage

MiB = 1024 * 1024
#: Ceiling for inputs the protected code handles in well under 0.2 s; unprotected, each of the
#: timed cases below takes from 5 s to minutes.
CEILING_SECONDS = 3.0

SEND = SentMessage(
    message_id="<send-1@mail.sales.example>",
    ref="c1:p1",
    sender="rep@sales.example",
    to=("jo@customer.example",),
)


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _peak_bytes(call: Callable[[], object]) -> int:
    """The tracemalloc peak of `call`, beyond what was allocated before it (the input)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _read_everything(data: bytes) -> object:
    h = parse_headers(data)
    return (h.message_id, h.in_reply_to, h.references, h.from_, h.to, h.cc, h.subject, h.defects)


class CountingStore(MemoryStore):
    """A MemoryStore that records the size of every exact-id lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[int] = []

    def find_sent(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        ids = list(message_ids)
        self.lookups.append(len(ids))
        return super().find_sent(ids)

    def find_incoming(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        ids = list(message_ids)
        self.lookups.append(len(ids))
        return super().find_incoming(ids)


# --- header blocks over 1 MiB -----------------------------------------------------------------


def test_a_header_block_over_one_mebibyte_is_read_up_to_max_header_bytes() -> None:
    line = b"X-Trace: " + b"t" * 54 + b"\r\n"  # 65 bytes
    data = b"From: jo@customer.example\r\n" + line * (2 * MiB // len(line)) + b"\r\nbody\r\n"

    headers = parse_headers(data)

    assert len(headers) <= MAX_HEADER_BYTES // len(line) + 1
    assert any("longer than" in d for d in headers.defects)
    assert headers.from_[0].addr == "jo@customer.example"
    assert _peak_bytes(lambda: _read_everything(data)) < 24 * MiB


def test_a_one_mebibyte_folded_field_costs_linear_time_and_bounded_memory() -> None:
    data = b"From: jo@customer.example\nSubject: " + b"word\n " * (MiB // 6) + b"end\n\nbody\n"

    assert _seconds(lambda: _read_everything(data)) < CEILING_SECONDS
    assert _seconds(lambda: classify(data)) < CEILING_SECONDS
    assert _peak_bytes(lambda: _read_everything(data)) < 24 * MiB


# --- 10,000 References ------------------------------------------------------------------------


def _references(count: int) -> bytes:
    ids = "\r\n ".join(f"<{i}.abcdef@thread.example>" for i in range(count))
    return (
        "From: jo@customer.example\r\nMessage-ID: <own@customer.example>\r\n"
        f"In-Reply-To: <{count - 1}.abcdef@thread.example>\r\nReferences: {ids}\r\n\r\nbody\r\n"
    ).encode()


def test_ten_thousand_references_keep_the_root_and_the_newest() -> None:
    headers = parse_headers(_references(10_000))

    kept = headers.references
    assert len(kept) == MAX_IDS_PER_FIELD
    assert kept[:KEEP_FIRST_IDS] == tuple(f"{i}.abcdef@thread.example" for i in range(4))
    assert kept[-1] == "9999.abcdef@thread.example"
    assert any("10000 message ids" in d for d in headers.defects)


def test_ten_thousand_references_make_bounded_store_lookups() -> None:
    store = CountingStore()
    store.record_sent(SEND)

    assert Correlator(store).correlate(_references(10_000)) is None
    assert store.lookups
    assert max(store.lookups) <= 2 * MAX_IDS_PER_FIELD + 1


# --- deeply nested multiparts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    """bench_pathological's builders: the guards check the inputs the benchmark measures."""
    return load_benchmark("bench_pathological")


def _depth(message: Any) -> int:
    deepest, stack = 0, [(message, 1)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload)
    return deepest


def test_the_stdlib_parser_gets_at_most_max_containers_nested_parts(inputs: ModuleType) -> None:
    parsed = mime.parse(inputs.nested(10_000))

    assert parsed is not None  # unbounded, the stdlib parser fails with RecursionError
    assert _depth(parsed) <= mime.MAX_CONTAINERS + 1


@pytest.mark.parametrize("sender", ["jo@customer.example", "MAILER-DAEMON@mx.example"])
def test_deeply_nested_multiparts_with_a_long_body_classify_in_bounded_time(
    sender: str, inputs: ModuleType
) -> None:
    """The feed parser checks each line against every enclosing boundary: depth x lines."""
    data = inputs.nested(200, sender=sender, body=b"\n" * 400_000)  # unbounded: 7 s

    assert _seconds(lambda: classify(data)) < CEILING_SECONDS
    assert _seconds(lambda: Correlator(MemoryStore()).correlate(data)) < CEILING_SECONDS


def test_a_bounce_whose_returned_message_nests_five_thousand_deep_is_still_a_bounce() -> None:
    data = (
        b"From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nDelivery failed.\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        b"Final-Recipient: rfc822; jo@customer.example\nAction: failed\nStatus: 5.1.1\n\n"
        b"--b\n"
        + b"Content-Type: message/rfc822\n\n" * 5_000
        + b"Subject: original\n\nHi\n--b--\n"
    )

    verdict = classify(data)

    assert verdict.kind is Kind.BOUNCE  # unbounded: RecursionError, and no bounce is seen
    assert verdict.bounce is not None
    assert [r.address for r in verdict.bounce.recipients] == ["jo@customer.example"]


# --- a 50 MB attachment -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["jo@customer.example", "MAILER-DAEMON@mx.example"])
def fifty_megabytes(request: pytest.FixtureRequest, inputs: ModuleType) -> bytes:
    """A 50 MB message from a person (read by replytrack.mime) or a daemon (by the stdlib)."""
    data: bytes = inputs.attachment(50, request.param)
    return data


def test_classifying_a_fifty_megabyte_message_reads_a_bounded_prefix(
    fifty_megabytes: bytes,
) -> None:
    assert len(fifty_megabytes) > 50 * 10**6
    assert classify(fifty_megabytes).kind in (Kind.OUT_OF_OFFICE, Kind.AUTO_REPLY)
    # Everything classify copies or parses is bounded by MAX_PARSE_BYTES (512 KiB).
    assert _peak_bytes(lambda: classify(fifty_megabytes)) < 20 * MAX_PARSE_BYTES


def test_classify_hands_the_mime_readers_at_most_max_parse_bytes(
    fifty_megabytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    for name in ("body_text", "parse"):
        real = getattr(mime, name)

        def spy(data: bytes, real: Any = real) -> Any:
            sizes.append(len(data))
            return real(data)

        monkeypatch.setattr(mime, name, spy)

    classify(fifty_megabytes)

    assert sizes
    assert max(sizes) <= MAX_PARSE_BYTES


def test_correlating_a_fifty_megabyte_message_reads_a_bounded_prefix(
    fifty_megabytes: bytes,
) -> None:
    store = MemoryStore()
    store.record_sent(SEND)
    correlator = Correlator(store)

    found = correlator.correlate(fifty_megabytes)

    assert found is not None
    assert found.ref == "c1:p1"
    assert _peak_bytes(lambda: correlator.correlate(fifty_megabytes)) < 20 * MAX_PARSE_BYTES


def test_parsing_the_headers_of_a_fifty_megabyte_message_reads_the_header_block_only(
    fifty_megabytes: bytes,
) -> None:
    assert _peak_bytes(lambda: _read_everything(fifty_megabytes)) < MiB


# --- long runs of ";", "(", "=?" and "<" ------------------------------------------------------

RUNS = [";", "(", "=?", "<"]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("field", ["From", "To", "References", "In-Reply-To", "Subject"])
def test_a_long_run_in_a_header_field_costs_linear_time(field: str, run: str) -> None:
    value = run * (64 * 1024 // len(run))
    data = f"{field}: {value}\nMessage-ID: <own@customer.example>\n\nbody\n".encode()

    assert _seconds(lambda: _read_everything(data)) < CEILING_SECONDS
    assert _seconds(lambda: classify(data)) < CEILING_SECONDS


@pytest.mark.parametrize("run", ["a", "[", "'", "=?utf-8?q?"])
def test_an_address_field_that_is_one_long_word_costs_linear_time(run: str) -> None:
    """The plain-list fast path is matched item by item, never retried at every offset."""
    data = f"From: {run * (32 * 1024 // len(run))}\n\nbody\n".encode()  # unbounded: 10 s and more

    assert _seconds(lambda: parse_headers(data).from_) < CEILING_SECONDS


@pytest.mark.parametrize("run", [b"<", b"<a"])
def test_a_mebibyte_of_open_brackets_costs_linear_time_and_keeps_few_defects(run: bytes) -> None:
    data = b"References: " + run * ((MiB - 100) // len(run)) + b"\n\nbody\n"  # unbounded: 6 s

    headers = parse_headers(data)

    assert _seconds(lambda: headers.references) < CEILING_SECONDS
    assert len(headers.defects) <= 25
    assert _peak_bytes(lambda: _read_everything(data)) < 24 * MiB


def test_a_field_of_many_defective_items_keeps_few_defects() -> None:
    names = ", ".join(f"=?bogus?q?x{i}?= <a{i}@b.example>" for i in range(20_000))
    headers = parse_headers(f"To: {names}\nReferences: {'<a ' * 20_000}\n\n".encode())

    assert len(headers.to) == 20_000
    assert len(headers.defects) <= 2 * 21
    assert headers.defects[-1].endswith("more defects not listed")


@pytest.mark.parametrize("run", [";", ";a=b", '"', "("])
def test_a_long_parameter_list_is_read_up_to_max_params_chars(run: str) -> None:
    value = "multipart/mixed" + run * (256 * 1024 // len(run)) + "; boundary=b"
    data = f"From: MAILER-DAEMON@mx.example\nContent-Type: {value}\n\n--b\n\nx\n--b--\n".encode()

    parsed = mime.parse(data)

    assert parsed is not None
    assert len(parsed.get("content-type", "")) <= mime.MAX_PARAMS_CHARS
    assert _seconds(lambda: classify(data)) < CEILING_SECONDS  # unbounded: 5 s per read
