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
        get their payload - and any leaf with 8-bit data, which ``ooo._text_parts``'s
        ``get_payload()`` decodes by its charset parameter, raising for some (``undefined``),
        as on the stdlib's tree. Decoding is left to the stdlib methods on the skeleton.
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
Rule 6: most mail is simple, and `body_text` reads it without building a skeleton (whose
        ``Message`` objects and ``get_param`` calls were half of its cost): the same walk
        (Rule 1, Rule 3) collects the ``text/plain`` and ``text/html`` leaves, and the chosen
        leaf is decoded as ``Message.get_payload(decode=True)`` and `ooo`'s own charset
        handling (``ooo._decode_payload``) decode it - but only where every value read is plain:
        ASCII, no longer than `MAX_PARAMS_CHARS`, a ``Content-Type`` of ``type/subtype`` and
        ``name=token`` or ``name="text"`` parameters only (no RFC 2231 ``name*``, no comment,
        no backslash, no ``;`` or ``<>`` in a value: then the stdlib's parameter parser reads
        the same first ``charset`` and ``boundary``), a transfer encoding that is not one of
        the uuencode names, at most ``ooo._MAX_PARTS`` parts (so that ``ooo._text_parts``
        visits them all). Where ``get_payload()`` would raise on a leaf reached (Rule 2), the
        text is ``""``, as ``ooo.body_text`` makes it. Anything else takes the skeleton path.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import quopri
import re
from collections.abc import Callable

# Message.get_payload(decode=True) decodes base64 with it (Rule 6); typeshed has no stub.
from email._encoded_words import decode_b as _stdlib_decode_b  # type: ignore[import-not-found]
from email.header import Header
from typing import Any, Final

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
# with neither colon nor leading white space, or a leading continuation are not such lines.
_FIELD_START: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
# A line break not followed by a field or a continuation line: the first one in a part ends its
# header block, at the empty line or (a defect) at a line that is neither. The search jumps
# from line break to line break and reads only the start of each line, where matching every
# line of a 3 KB trace block whole, then searching it again for the empty line, cost twice
# as much.
_FIELDS_END: Final = re.compile(rb"\n(?![ \t]|[\x21-\x39\x3b-\x7e]+:)")
# Matched at the start of a line found by searching the lower-cased block for "content-",
# which is much cheaper than a multi-line pattern tried at every offset of a 3 KB trace block.
_WANTED: Final = re.compile(
    rb"(content-(?:type|transfer-encoding|disposition)):([^\n]*\n(?:[ \t][^\n]*\n)*)",
    re.IGNORECASE,
)
_TEXT_TYPES: Final = frozenset({"text/plain", "text/html"})


# Rule 6: a Content-Type the stdlib's parameter parser (`email.message._parseparam`,
# `email.utils.decode_params`, `unquote`) reads like this: type/subtype, then parameters
# `name="text"` or `name=token` (possibly empty), white space (folding included) around each
# piece. No "*" in a name (RFC 2231), no quote, backslash, ";" or "<>" in a value (quote
# counting, unquoting).
_WS: Final = r"[ \t\r\n]*"
_WORD_CHARS: Final = r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]"
_PLAIN_TYPE: Final = re.compile(f"{_WS}{_WORD_CHARS}+/{_WORD_CHARS}+{_WS}")
_PLAIN_PARAM: Final = re.compile(
    rf';{_WS}([A-Za-z0-9_.-]+){_WS}={_WS}(?:"([^"\\;<>\r\n]*)"|({_WORD_CHARS}*)){_WS}'
)
# The transfer encodings Message.get_payload decodes with uu (Rule 6 leaves them to it).
_UUENCODE: Final = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_decode_b: Final[Callable[[bytes], tuple[bytes, list[Any]]]] = _stdlib_decode_b


class _UnsureError(Exception):
    """The feed parser would take a branch this reader does not reproduce."""


class _Leaf:
    """A leaf found by `_Reader.leaves` (Rule 6): neither a multipart nor a message."""

    __slots__ = ("ctype", "end", "fields", "start")

    def __init__(self, ctype: str, fields: dict[bytes, tuple[str, str]], start: int, end: int):
        self.ctype = ctype
        self.fields = fields
        self.start = start
        self.end = end


def _plain_params(value: str) -> dict[str, str]:
    """The parameters of a plain ``Content-Type`` value as ``Message.get_param`` reads them.

    Names lower-cased, values unquoted, the first of each name kept; `_UnsureError` where the
    value is not plain (Rule 6).
    """
    if len(value) > MAX_PARAMS_CHARS or not value.isascii():
        raise _UnsureError
    m = _PLAIN_TYPE.match(value)
    if m is None:
        raise _UnsureError
    params: dict[str, str] = {}
    at, end = m.end(), len(value)
    while at < end:
        p = _PLAIN_PARAM.match(value, at)
        if p is None:
            raise _UnsureError
        quoted = p.group(2)
        params.setdefault(p.group(1).lower(), p.group(3) if quoted is None else quoted)
        at = p.end()
    return params


def _plain_body_text(data: bytes) -> str | None:
    """`body_text` of a message whose text part is plain (Rule 6); ``None`` for the rest."""
    try:
        if _BARE_CR.search(data) or data.startswith(b"From "):
            return None
        return _Reader(data).plain_body_text()
    except Exception:  # _UnsureError, and Rule 4: the skeleton path decides
        return None


def body_text(data: bytes) -> str | None:
    """Return `ooo.body_text` of a message, computed without the stdlib parser.

    Args:
        data: the raw message (the caller bounds its size).

    Returns:
        The text ``ooo.body_text(email.message_from_bytes(data, policy=compat32))`` returns,
        or ``None`` when the message's structure is one this reader leaves to the stdlib
        (Rule 1). Never raises.
    """
    text = _plain_body_text(data)
    if text is not None:
        return text
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
    return _ascii_content_type(value)


def _ascii_content_type(value: str) -> str:
    """``Message.get_content_type()`` of a plain ASCII value, as its ``_splitparam`` reads it."""
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
        fields = self._fields(start, fields_end)
        for name, value in fields.values():
            msg[name] = value
        content_type = fields.get(b"content-type")
        ctype = _content_type(msg, None if content_type is None else content_type[1])
        maintype = ctype.partition("/")[0]
        if maintype == "message":
            return msg  # ooo never reads attached messages (ooo Rule 6)
        if maintype == "multipart":
            self._children(msg, ctype, body, end, depth=depth)
            return msg
        payload = data[body : self._payload_end(body, end, nested=nested)]
        # ooo._text_parts calls get_payload() on every leaf, which decodes 8-bit data with the
        # charset parameter and can raise (charset "undefined"): other leaves keep theirs too.
        if ctype in _TEXT_TYPES or not payload.isascii():
            msg.set_payload(payload.decode("ascii", "surrogateescape"))
        else:
            msg.set_payload("")
        return msg

    def _payload_end(self, body: int, end: int, *, nested: bool) -> int:
        """The end of a leaf's payload in ``data[body:end]``; `nested`: it sits in a multipart."""
        if nested:
            # RFC 2046 §5.1.1: the line break before a boundary is the boundary's.
            if self.data.endswith(b"\r\n", body, end):
                return end - 2
            if self.data.endswith(b"\n", body, end):
                return end - 1
        return end

    def plain_body_text(self) -> str:
        """`ooo.body_text` of the skeleton, read from the leaves (Rule 6), or `_UnsureError`."""
        leaves: list[_Leaf] = []
        self.leaves(0, len(self.data), depth=0, digest=False, nested=False, out=leaves)
        # ooo.body_text, step by step, over the leaves ooo._text_parts yields.
        html_part: _Leaf | None = None
        for leaf in leaves:
            if self._get_payload_raises(leaf):
                return ""  # ooo.body_text's "never raises"
            disposition = leaf.fields.get(b"content-disposition")
            if disposition is not None and disposition[1].lower().startswith("attachment"):
                continue
            if leaf.ctype == "text/plain":
                return self._decode(leaf)
            if leaf.ctype == "text/html" and html_part is None:
                html_part = leaf
        if html_part is not None:
            return ooo._strip_html(self._decode(html_part))[: ooo.MAX_BODY_CHARS]
        return ""

    def leaves(
        self, start: int, end: int, *, depth: int, digest: bool, nested: bool, out: list[_Leaf]
    ) -> None:
        """`part`, without the ``Message`` objects: the leaves go to `out` in order."""
        self.parts += 1
        if self.parts > min(MAX_PARTS, ooo._MAX_PARTS) or depth > MAX_DEPTH:
            raise _UnsureError
        fields_end, body = self._header_end(start, end)
        fields = self._fields(start, fields_end)
        content_type = fields.get(b"content-type")
        value = "" if content_type is None else content_type[1]
        if content_type is None:
            ctype = "message/rfc822" if digest else "text/plain"
        else:
            if not value.isascii() or len(value) > MAX_PARAMS_CHARS:
                raise _UnsureError  # a Header (Rule 1), or a value cut (Rule 5)
            ctype = _ascii_content_type(value)
        maintype = ctype.partition("/")[0]
        if maintype == "message":
            return  # ooo never reads attached messages (ooo Rule 6)
        if maintype == "multipart":
            boundary = _plain_params(value).get("boundary")
            # Message.get_boundary: collapse_rfc2231_value (unquote) and rstrip.
            spans = self._child_spans(None if boundary is None else boundary.rstrip(), body, end)
            for part_start, part_end in spans:
                self.leaves(
                    part_start,
                    part_end,
                    depth=depth + 1,
                    digest=ctype == "multipart/digest",
                    nested=True,
                    out=out,
                )
            return
        # ooo.body_text reads the payload and disposition of every leaf it reaches; an ASCII
        # disposition is the value itself.
        disposition = fields.get(b"content-disposition")
        if disposition is not None and not disposition[1].isascii():
            raise _UnsureError  # compat32 hands out a Header
        out.append(_Leaf(ctype, fields, body, self._payload_end(body, end, nested=nested)))

    def _get_payload_raises(self, leaf: _Leaf) -> bool:
        """Whether ``Message.get_payload()``, called by ``ooo._text_parts``, raises on the leaf.

        A payload with 8-bit data is decoded with the ``charset`` parameter (``"ascii"`` if
        none), errors replaced; only a LookupError is caught, and a codec such as
        ``undefined`` or ``idna`` raises another error.
        """
        payload = self.data[leaf.start : leaf.end]
        if payload.isascii():
            return False
        content_type = leaf.fields.get(b"content-type")
        charset = "ascii"
        if content_type is not None:
            charset = _plain_params(content_type[1]).get("charset", "ascii")
        try:
            payload.decode(charset, "replace")
        except LookupError:
            return False
        except Exception:  # the very error the stdlib path raises
            return True
        return False

    def _decode(self, leaf: _Leaf) -> str:
        """``ooo._decode_payload`` of the leaf, its payload decoded as ``get_payload`` does."""
        content_type = leaf.fields.get(b"content-type")
        charset = None
        if content_type is not None:
            charset = _plain_params(content_type[1]).get("charset")
            if charset is not None:
                charset = charset.lower()  # Message.get_content_charset
        # The skeleton's payload, surrogate-escaped, is encoded back to these very bytes.
        payload = self.data[leaf.start : leaf.end]
        cte_field = leaf.fields.get(b"content-transfer-encoding")
        cte = "" if cte_field is None else cte_field[1]
        if not cte.isascii():
            raise _UnsureError  # compat32 hands out a Header
        cte = cte.lower()  # lower-cased, not stripped: "base64 " is no base64
        if cte == "quoted-printable":
            payload = quopri.decodestring(payload)
        elif cte == "base64":
            payload = _decode_b(b"".join(payload.splitlines()))[0]
        elif cte in _UUENCODE:
            raise _UnsureError
        return ooo._decode_payload(payload, charset)

    def _fields(self, start: int, fields_end: int) -> dict[bytes, tuple[str, str]]:
        """The fields of Rule 2 in ``data[start:fields_end]``: lower-case name -> (name, value).

        The first field of each name, as `email.message.Message.get` returns it; the value as
        ``compat32`` stores it, binary data surrogate-escaped as the bytes parser leaves it.
        """
        data = self.data
        found: dict[bytes, tuple[str, str]] = {}
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
            if key in found:
                continue  # Message.get returns the first
            value = m.group(2).lstrip(b" \t").rstrip(b"\r\n").decode("ascii", "surrogateescape")
            found[key] = (m.group(1).decode("ascii"), value)
        return found

    def _header_end(self, start: int, end: int) -> tuple[int, int]:
        """The end of the header block in ``data[start:end]`` and the start of the body."""
        data = self.data
        if data.startswith(b"\n", start, end):
            return start, start + 1
        if data.startswith(b"\r\n", start, end):
            return start, start + 2
        stop = None
        if _FIELD_START.match(data, start, end) is not None:
            stop = _FIELDS_END.search(data, start, end)
        if stop is not None:
            fields_end = stop.end()
            if data.startswith(b"\n", fields_end, end):
                return fields_end, fields_end + 1
            if data.startswith(b"\r\n", fields_end, end):
                return fields_end, fields_end + 2
        # The fields end early (the first line, or one before the empty line, is neither a
        # field nor a continuation), where the feed parser records a defect; or they run to
        # the end (no empty line: fields up to the end, or a body without one).
        raise _UnsureError

    def _children(
        self, msg: email.message.Message, ctype: str, start: int, end: int, *, depth: int
    ) -> None:
        digest = ctype == "multipart/digest"
        for part_start, part_end in self._child_spans(msg.get_boundary(), start, end):
            msg.attach(
                self.part(part_start, part_end, depth=depth + 1, digest=digest, nested=True)
            )

    def _child_spans(self, boundary: str | None, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of a multipart whose body is ``data[start:end]``: (start, end) of each."""
        if not boundary or not boundary.isascii():
            raise _UnsureError
        lines = self._boundary_lines(b"--" + boundary.encode("ascii"), start, end)
        if not lines or lines[0][2]:
            raise _UnsureError  # no part at all
        spans: list[tuple[int, int]] = []
        k = 0
        while True:
            # Adjacent boundary lines are one (the feed parser's reading of RFC 2046 BNF).
            while k + 1 < len(lines) and lines[k + 1][0] == lines[k][1]:
                k += 1
            spans.append((lines[k][1], lines[k + 1][0] if k + 1 < len(lines) else end))
            k += 1
            if k >= len(lines) or lines[k][2]:
                return spans  # the close boundary, or the end of the data (a truncated multipart)

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
