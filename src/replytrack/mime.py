"""A small, bounded MIME reader: the first text part of a message, without the full parser.

`classify` needs the body of ordinary human mail only for `replytrack.ooo`, which reads the
first ``text/plain`` part (else the first ``text/html`` one). Building a whole stdlib `Message`
for that - the ``compat32`` feed parser walks every line in Python and compiles a regular
expression per multipart boundary - cost about 60 % of classifying a reply. This module finds
the MIME structure with `bytes.find` instead and hands `ooo.body_text` a skeleton of
``compat32`` `email.message.Message` objects that carry only what it reads, so that the part
chosen and its decoding (transfer encoding, charset) are exactly those of the stdlib path.

Rule 1: the result equals the stdlib's, or there is none. The reader reproduces the feed
        parser (RFC 2045 §5, RFC 2046 §5.1.1 as Python 3.11's ``email.feedparser`` reads them):
        a header block ends at the first empty line; field values are kept as ``compat32``
        stores them (first-line white space dropped, continuation lines kept, the final line
        break dropped); a boundary line is ``--boundary``, optionally ``--``, optionally spaces
        or tabs, then the line end; adjacent boundary lines are one; the line break before a
        boundary belongs to the boundary. Where the feed parser would record a defect or take
        a lenient branch - a bare CR, a line that is neither a field nor a continuation before
        the empty line, an envelope ``From `` line, a multipart without a boundary or without
        parts, a part without an empty line after its fields - `skeleton` returns ``None`` and
        the caller parses with the standard library.
Rule 2: only the fields `ooo.body_text` consults are copied (``Content-Type``,
        ``Content-Transfer-Encoding``, ``Content-Disposition``, the first of each, as
        `email.message.Message.get` returns it); only ``text/plain`` and ``text/html`` leaves
        get their payload. Decoding is left to the stdlib methods on the skeleton.
Rule 3: work is bounded: at most `MAX_PARTS` parts and `MAX_DEPTH` levels of nesting, else
        ``None``. The caller bounds the input (`replytrack.classify.MAX_PARSE_BYTES`).
Rule 4: nothing here raises on mail; an unforeseen failure is ``None`` ("unsure").
Rule 5: where the standard library parses after all (`parse`), its quadratic paths are cut
        off. The feed parser checks every line against the boundary of every enclosing
        multipart, and each nested part nests a parser frame: the input is cut before the
        ``Content-Type`` line of its `MAX_CONTAINERS` + 1st ``multipart/*`` or ``message/*``
        part (200 nested multiparts over 400 KB of short lines took 7 s, and past about 300
        levels the parser failed with RecursionError, so the message was not read at all; a
        cut multipart parses like one with a missing final boundary).
        ``Message.get_param``, which reads every parameter, is quadratic in their number (its
        ``_parseparam`` copies the rest of the value at each ``;``: 1 s for 256 KB of ``;``):
        `POLICY` reads a ``Content-Type`` or ``Content-Disposition`` value longer than
        `MAX_PARAMS_CHARS` up to that length only. The skeleton's parts use `POLICY` too, so
        that both paths agree.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from email.header import Header
from typing import Final

from replytrack import ooo

__all__ = [
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "MAX_PARAMS_CHARS",
    "MAX_PARTS",
    "POLICY",
    "body_text",
    "parse",
    "skeleton",
]

#: The most MIME parts (containers and leaves) the reader builds before giving up.
MAX_PARTS: Final = 100
#: The deepest nesting of multiparts the reader follows before giving up.
MAX_DEPTH: Final = 8
#: The most ``multipart/*`` and ``message/*`` parts `parse` hands to the standard library
#: (Rule 5). Real mail nests a handful (a bounce forwarded by Exchange: six); the parts that
#: classification reads come first.
MAX_CONTAINERS: Final = 16
#: The longest ``Content-Type`` or ``Content-Disposition`` value whose parameters are read
#: whole (Rule 5). Real ones stay under 1,000 characters, even with a long RFC 2231 filename.
MAX_PARAMS_CHARS: Final = 4096


class _BoundedPolicy(email.policy.Compat32):
    """``compat32``, with parameter-bearing fields read up to `MAX_PARAMS_CHARS` (Rule 5)."""

    # typeshed's Compat32 narrows Policy's return type the same way, with the same ignore.
    def header_fetch_parse(self, name: str, value: str) -> str | Header:  # type: ignore[override]
        """Return the value as ``compat32`` does, over-long parameter lists cut."""
        if len(value) > MAX_PARAMS_CHARS and name.lower() in _PARAMS_FIELDS:
            value = value[:MAX_PARAMS_CHARS]
        return super().header_fetch_parse(name, value)


_PARAMS_FIELDS: Final = frozenset({"content-type", "content-disposition"})
#: The ``compat32`` policy with Rule 5's bound; `parse` and `skeleton` build messages with it.
POLICY: Final = _BoundedPolicy()

# The feed parser splits lines on CRLF, LF and a bare CR; a bare CR is rare enough in mail to
# leave to it, so that lines here end with LF only.
_BARE_CR: Final = re.compile(rb"\r(?!\n)")
# A header block the feed parser reads without a defect: fields (a name of printable ASCII but
# the colon, then the colon) and their continuation lines. An envelope "From " line, a line
# with neither colon nor leading white space, or a leading continuation do not match.
_FIELD: Final = rb"[\x21-\x39\x3b-\x7e]+:[^\n]*\n(?:[ \t][^\n]*\n)*"
_HEADER_BLOCK: Final = re.compile(rb"(?:" + _FIELD + rb")*")
# Matched at the start of a line found by searching the lower-cased block for "content-",
# which is much cheaper than a multi-line pattern tried at every offset of a 3 KB trace block.
_WANTED: Final = re.compile(
    rb"(content-(?:type|transfer-encoding|disposition)):([^\n]*\n(?:[ \t][^\n]*\n)*)",
    re.IGNORECASE,
)
# The line break ending the last field, then the empty line. One search, which stops at the
# first: two `bytes.find` calls would each scan to the end when one kind is absent.
_EMPTY_LINE: Final = re.compile(rb"\n\r?\n")
_TEXT_TYPES: Final = frozenset({"text/plain", "text/html"})


class _UnsureError(Exception):
    """The feed parser would take a branch this reader does not reproduce."""


def body_text(data: bytes) -> str | None:
    """Return `ooo.body_text` of a message, computed without the stdlib parser.

    Args:
        data: the raw message (the caller bounds its size).

    Returns:
        The text ``ooo.body_text(email.message_from_bytes(data, policy=compat32))`` returns,
        or ``None`` when the message's structure is one this reader leaves to the stdlib
        (Rule 1). Never raises.
    """
    root = skeleton(data)
    return None if root is None else ooo.body_text(root)


def parse(data: bytes) -> email.message.Message | None:
    """Parse a message with the standard library's ``compat32`` parser, in bounded time.

    Args:
        data: the raw message (the caller bounds its size).

    Returns:
        What ``email.message_from_bytes(data, policy=compat32)`` returns, with the parts past
        the `MAX_CONTAINERS` th container left out and over-long parameter lists cut (Rule
        5); ``None`` if the parser fails. Never raises.
    """
    try:
        return email.message_from_bytes(_cut_containers(data), policy=POLICY)
    except Exception:  # Rule 4
        return None


# A container's Content-Type, read from just after "content-type:" in the lower-cased data,
# folding included. The feed parser ends lines at CRLF, LF or a bare CR.
_CONTAINER_VALUE: Final = re.compile(rb"(?:[ \t]|(?:\r\n|\r|\n)[ \t])*(?:multipart|message)/")


def _cut_containers(data: bytes) -> bytes:
    """`data` up to the `MAX_CONTAINERS` + 1st container's ``Content-Type`` line (Rule 5)."""
    lower = data.lower()
    count = 0
    at = lower.find(b"content-type:")
    while at >= 0:
        # At the start of a line only; a line of body text that looks like one counts too,
        # which can only cut sooner.
        if (at == 0 or lower[at - 1] in b"\r\n") and _CONTAINER_VALUE.match(lower, at + 13):
            count += 1
            if count > MAX_CONTAINERS:
                return data[:at]
        at = lower.find(b"content-type:", at + 13)
    return data


def skeleton(data: bytes) -> email.message.Message | None:
    """Build the MIME skeleton of a message: its parts with the fields `ooo.body_text` reads.

    Args:
        data: the raw message (the caller bounds its size).

    Returns:
        A ``compat32`` `email.message.Message` tree whose multiparts, content types,
        dispositions, transfer encodings and text payloads are those the stdlib parser
        builds; ``None`` when unsure (Rule 1) or over the bounds (Rule 3). Never raises.
    """
    try:
        if _BARE_CR.search(data) or data.startswith(b"From "):
            return None
        return _Reader(data).part(0, len(data), depth=0, digest=False, nested=False)
    except _UnsureError:
        return None
    except Exception:  # Rule 4: unforeseen input is "unsure", never an error
        return None


def _content_type(msg: email.message.Message, value: str | None) -> str:
    """``msg.get_content_type()``, computed directly for the common, plain ASCII value."""
    if value is None:
        return msg.get_default_type()
    if not value.isascii():
        return msg.get_content_type()  # compat32 hands out such a value as a Header
    # email.message.Message.get_content_type and _splitparam, step by step.
    ctype = value.partition(";")[0].strip().lower()
    return "text/plain" if ctype.count("/") != 1 else ctype


class _Reader:
    __slots__ = ("data", "parts")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.parts = 0

    def part(
        self, start: int, end: int, *, depth: int, digest: bool, nested: bool
    ) -> email.message.Message:
        """The part in ``data[start:end]``; `nested`: it sits in a multipart."""
        self.parts += 1
        if self.parts > MAX_PARTS or depth > MAX_DEPTH:
            raise _UnsureError
        data = self.data
        fields_end, body = self._header_end(start, end)
        msg = email.message.Message(policy=POLICY)
        if digest:
            # RFC 2046 §5.1.5, as the feed parser applies it.
            msg.set_default_type("message/rfc822")
        content_type: str | None = None
        seen: set[bytes] = set()
        lower = data[start:fields_end].lower()
        at = 0
        while (at := lower.find(b"content-", at)) >= 0:
            if at and lower[at - 1] != 0x0A:
                at += 8
                continue  # not the start of a field
            m = _WANTED.match(data, start + at, fields_end)
            at += 8
            if m is None:
                continue
            key = lower[at - 8 : at - 8 + len(m.group(1))]
            if key in seen:
                continue  # Message.get returns the first
            seen.add(key)
            value = m.group(2).lstrip(b" \t").rstrip(b"\r\n").decode("ascii", "surrogateescape")
            msg[m.group(1).decode("ascii")] = value
            if key == b"content-type":
                content_type = value
        ctype = _content_type(msg, content_type)
        maintype = ctype.partition("/")[0]
        if maintype == "message":
            return msg  # ooo never reads attached messages (ooo Rule 6)
        if maintype == "multipart":
            self._children(msg, ctype, body, end, depth=depth)
            return msg
        if ctype in _TEXT_TYPES:
            payload = data[body:end]
            if nested:
                # RFC 2046 §5.1.1: the line break before a boundary is the boundary's.
                if payload.endswith(b"\r\n"):
                    payload = payload[:-2]
                elif payload.endswith(b"\n"):
                    payload = payload[:-1]
            msg.set_payload(payload.decode("ascii", "surrogateescape"))
        else:
            msg.set_payload("")
        return msg

    def _header_end(self, start: int, end: int) -> tuple[int, int]:
        """The end of the header block in ``data[start:end]`` and the start of the body."""
        data = self.data
        if data.startswith(b"\n", start, end):
            return start, start + 1
        if data.startswith(b"\r\n", start, end):
            return start, start + 2
        blank = _EMPTY_LINE.search(data, start, end)
        if blank is None:
            raise _UnsureError  # no empty line: fields up to the end, or a body without one
        fields_end, body = blank.start() + 1, blank.end()
        if _HEADER_BLOCK.fullmatch(data, start, fields_end) is None:
            raise _UnsureError  # the feed parser would end the fields early, with a defect
        return fields_end, body

    def _children(
        self, msg: email.message.Message, ctype: str, start: int, end: int, *, depth: int
    ) -> None:
        boundary = msg.get_boundary()
        if not boundary or not boundary.isascii():
            raise _UnsureError
        lines = self._boundary_lines(b"--" + boundary.encode("ascii"), start, end)
        if not lines or lines[0][2]:
            raise _UnsureError  # no part at all
        digest = ctype == "multipart/digest"
        k = 0
        while True:
            # Adjacent boundary lines are one (the feed parser's reading of RFC 2046 BNF).
            while k + 1 < len(lines) and lines[k + 1][0] == lines[k][1]:
                k += 1
            part_start = lines[k][1]
            part_end = lines[k + 1][0] if k + 1 < len(lines) else end
            msg.attach(
                self.part(part_start, part_end, depth=depth + 1, digest=digest, nested=True)
            )
            k += 1
            if k >= len(lines) or lines[k][2]:
                return  # the close boundary, or the end of the data (a truncated multipart)

    def _boundary_lines(self, sep: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
        """Boundary lines in ``data[start:end]``: (line start, next line start, is close)."""
        data = self.data
        found: list[tuple[int, int, bool]] = []
        pos = start
        while (i := data.find(sep, pos, end)) >= 0:
            pos = i + 1
            if i != start and data[i - 1] != 0x0A:
                continue  # not at the start of a line
            newline = data.find(b"\n", i, end)
            line_end = end if newline < 0 else newline + 1
            rest = data[i + len(sep) : line_end]
            if rest.endswith(b"\r\n"):
                rest = rest[:-2]
            elif rest.endswith(b"\n"):
                rest = rest[:-1]
            close = rest.startswith(b"--")
            if close:
                rest = rest[2:]
            if rest.strip(b" \t"):
                continue  # "--boundary-more" is text, not a boundary
            found.append((i, line_end, close))
            pos = line_end
        return found
