"""Fuzz Outlook ``Thread-Index`` decoding (`replytrack.threadindex.ThreadIndex`).

Run (see README.md)::

    .venv/bin/python fuzz/fuzz_threadindex.py --runs 1000000 --max-len 4096 \
        --report threadindex.json

Each input is tried as the header value (bytes, and text with folding white space) and as
the binary MAPI form. ``decode`` must never raise (``threadindex.py`` Rule 1); what decodes
must encode back to itself (Rule 2) and take a child block (Rule 4).
"""

# ruff: noqa: S101 - the asserts are the checks; one that fails is a finding

from __future__ import annotations

import base64
import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _runner  # found through the sys.path line above

with _runner.instrumented(__name__ == "__main__"):
    from replytrack.threadindex import CHILD_BLOCK_BYTES, HEADER_BYTES, ThreadIndex, child_delta

NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)


def _round_trip(index: ThreadIndex | None) -> None:
    if index is None:
        return
    raw = index.to_bytes()
    assert (len(raw) - HEADER_BYTES) % CHILD_BLOCK_BYTES == 0
    assert ThreadIndex.decode(index.encode()) == index
    assert ThreadIndex.from_bytes(raw) == index
    _ = index.header_time
    for block in index.children:
        assert child_delta(block) >= dt.timedelta(0)
    child = index.child(NOW, random=0)
    assert child.same_conversation(index)
    assert child.child_count == index.child_count + 1


def check(data: bytes) -> None:
    """Decode `data` in every form a Thread-Index arrives in; round-trip what decodes."""
    as_value = ThreadIndex.decode(data)
    text = data.decode("latin-1")
    as_text = ThreadIndex.decode(text)
    assert as_text == as_value or not text.isascii()
    _round_trip(as_value)
    folded = ThreadIndex.decode("\r\n\t".join(text[i : i + 76] for i in range(0, len(text), 76)))
    assert folded == as_text
    binary = ThreadIndex.from_bytes(data)
    _round_trip(binary)
    if binary is not None:
        encoded = base64.b64encode(data).decode("ascii")
        assert ThreadIndex.decode(encoded) == binary
        assert binary.encode() == encoded  # Rule 2: canonical base64 comes back unchanged


def extra_seeds() -> list[tuple[str, bytes]]:
    """Real-shaped values: classic and prefixed headers, with and without child blocks."""
    classic = ThreadIndex.new(NOW, bytes(range(16)))
    prefixed = ThreadIndex.new(NOW, bytes(range(16, 32)), layout=classic.layout.PREFIXED)
    seeds = []
    for name, index in (("classic", classic), ("prefixed", prefixed)):
        reply = index.child(NOW + dt.timedelta(days=3), random=1)
        seeds += [
            (f"{name}-value", index.encode().encode()),
            (f"{name}-reply-value", reply.encode().encode()),
            (f"{name}-binary", index.to_bytes()),
        ]
    seeds.append(("outlook-2003", b"AcZN8UUmQ2VTTmsuQUyeKiUQQNAJIQ=="))
    return seeds


if __name__ == "__main__":
    _runner.main("threadindex", check, extra_seeds())
