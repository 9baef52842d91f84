"""Lenient RFC 5322 header parsing, tuned for reply correlation.

`parse_headers` reads only the header block of a message and answers the questions reply
tracking asks: which ids does this message carry and reference, who wrote it to whom, what is
its subject and date. It is built for mail as it is, not as the RFCs wish it were.

Rule 1: lenient parsing never raises on any input. What is malformed is recorded in
        ``Headers.defects`` and parsing goes on with the rest.
Rule 2: only the header block is read (RFC 5322 §2.1): up to the first empty line, or up to the
        first line that is neither a field nor a continuation when the empty line is missing,
        and never more than `MAX_HEADER_BYTES`.
Rule 3: line endings may be CRLF, LF or CR alone; raw 8-bit values are UTF-8 (RFC 6532),
        falling back to latin-1 line by line, so no byte is lost.
Rule 4: fields are unfolded (RFC 5322 §2.2.3) and RFC 2047 encoded-words are decoded
        (adjacent words joined before decoding, so a character split over two words survives).
Rule 5: a message identifier is normalised to one canonical form everywhere: no angle brackets,
        no CFWS, the left part's case kept, the domain lower-cased (RFC 5322 §3.6.4). Stores and
        correlators compare ids in this form only.
Rule 6: work is bounded by the input: ids longer than `MAX_ID_LENGTH` are dropped, and a field
        with more than `MAX_IDS_PER_FIELD` ids keeps the first `KEEP_FIRST_IDS` (the thread
        root) and the newest rest (what replies point at), like RT's first-4 + last-6.

Parsing is lazy: the block is split into fields once; each structured field is parsed the first
time it is read, then cached. Reading every field a correlator needs from a 3 KB header block
takes a few tens of microseconds (see ``benchmarks/``).
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import datetime as _dt
import email.message
import email.utils
import functools
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar, overload

import attrs

from replytrack.errors import ParseError

__all__ = [
    "KEEP_FIRST_IDS",
    "MAX_HEADER_BYTES",
    "MAX_IDS_PER_FIELD",
    "MAX_ID_LENGTH",
    "Address",
    "Headers",
    "address_key",
    "decode_encoded_words",
    "normalize_msg_id",
    "normalize_subject",
    "parse_address",
    "parse_addresses",
    "parse_headers",
    "parse_msg_id",
    "parse_msg_ids",
    "text_to_bytes",
]

#: The most bytes of a message read as its header block. Real header blocks stay well below
#: 100 KiB even with long trace chains; anything bigger is hostile or broken.
MAX_HEADER_BYTES: Final = 1024 * 1024
#: Ids longer than this are dropped: RFC 5322 lines are at most 998 characters, and real ids,
#: ours included, are under 250.
MAX_ID_LENGTH: Final = 998
#: At most this many ids are kept from one field (``References`` of a long thread).
MAX_IDS_PER_FIELD: Final = 100
#: When over `MAX_IDS_PER_FIELD`, keep this many from the start (the thread root) and the
#: newest for the rest.
KEEP_FIRST_IDS: Final = 4

# --------------------------------------------------------------------------------------------
# Splitting the header block
# --------------------------------------------------------------------------------------------

# Everything that is a field line or a continuation line, from the start. RFC 5322 §3.6.8:
# a field name is printable US-ASCII except ":"; obsolete syntax allows WSP before the colon.
# These two regexes read every byte of the block, so they dominate parsing time. Possessive
# quantifiers (Python 3.11+) spare the engine its backtracking bookkeeping: ~20% faster.
_P = "+" if sys.version_info >= (3, 11) else ""
_VALID_BLOCK: Final = re.compile(
    rf"(?:(?:[!-9;-~]+{_P}[ \t]*{_P}:|[ \t])[^\n]*{_P}\n)*{_P}".encode()
)
_FIELD_LINE_START: Final = re.compile(rb"[!-9;-~]+[ \t]*:|[ \t]")
_FIELD: Final = re.compile(
    rf"^([!-9;-~]+{_P})[ \t]*{_P}:([^\n]*{_P}(?:\n[ \t][^\n]*{_P})*{_P})", re.MULTILINE
)
_NEWLINE_RUN: Final = re.compile(r"[\r\n]+")
_UTF8_BOM: Final = b"\xef\xbb\xbf"


def _cut_block(data: bytes, defects: list[str]) -> bytes:
    """Return the header block of `data`: whole lines, each ending in LF (CRLF kept as is)."""
    if data.startswith(_UTF8_BOM):
        data = data[3:]
        defects.append("message starts with a UTF-8 byte order mark")
    # An mbox "From " envelope line is not a header field (RFC 4155); skip it.
    if data.startswith(b"From "):
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
    head = data[:998]
    if b"\n" not in head and b"\r" in head:
        # Old Mac mail: CR alone ends lines. Rare, so a copy is fine.
        data = data[:MAX_HEADER_BYTES].replace(b"\r", b"\n")
    match = _VALID_BLOCK.match(data, 0, MAX_HEADER_BYTES)
    end = match.end() if match else 0
    if end == len(data) or data[end : end + 1] == b"\n" or data[end : end + 2] == b"\r\n":
        return data[:end]  # the empty line that ends the header block, or a header-only message
    line_end = data.find(b"\n", end)
    if _FIELD_LINE_START.match(data, end):
        if line_end < 0 and len(data) <= MAX_HEADER_BYTES:
            return data + b"\n"  # a header-only message whose last line has no line break
        defects.append(f"header block longer than {MAX_HEADER_BYTES} bytes; rest ignored")
    else:
        defects.append("no empty line after the header block; stopped at a non-field line")
    return data[:end]


def _decode_block(block: bytes, defects: list[str]) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # RFC 6532 allows UTF-8; older mailers put raw latin-1 or cp1252. Decode line by line, so
    # one bad line does not turn the UTF-8 lines around it into mojibake.
    lines = []
    for line in block.split(b"\n"):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
            if "8-bit header line is not UTF-8; decoded as latin-1" not in defects:
                defects.append("8-bit header line is not UTF-8; decoded as latin-1")
    return "\n".join(lines)


def _unfold(value: str) -> str:
    """Unfold a raw field value: remove line breaks (RFC 5322 §2.2.3) and outer whitespace."""
    if "\n" in value or "\r" in value:
        # Every LF in a raw value precedes WSP (that is how it got into the value); a CR left
        # over from CRLF, or a stray bare CR, carries no meaning.
        value = _NEWLINE_RUN.sub("", value)
    return value.strip()


def text_to_bytes(text: str) -> bytes:
    """Return the bytes of a message given as text, giving back raw bytes where it holds them.

    Text decoded with ``surrogateescape`` (as the standard library's parser does with 8-bit
    header bytes) gets its original bytes back; lone surrogates become ``?``. Never raises.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        # Text decoded with surrogateescape (as the stdlib parser does with raw 8-bit header
        # bytes): give the original bytes back, so they decode as UTF-8 or latin-1 per line.
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# RFC 2047 encoded-words
# --------------------------------------------------------------------------------------------

# RFC 2047 §2: =?charset?encoding?encoded-text?=. Leniently: the charset may carry an RFC 2231
# language (utf-8*en), and encoded-text may contain spaces, which some encoders emit.
_ENCODED_WORD: Final = re.compile(r"=\?([^? \t\r\n]+)\?([QqBb])\?([^?]*)\?=")
_B64_JUNK: Final = re.compile(r"[^A-Za-z0-9+/]")
# Charsets mislabelled in the wild, mapped to the codec that decodes what is really sent.
_CHARSET_ALIASES: Final = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "x-sjis": "cp932",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "windows-874": "cp874",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "us-ascii": "utf-8",  # mail labelled ASCII is often not; UTF-8 is a superset
    "ascii": "utf-8",
}


@functools.lru_cache(maxsize=128)
def _codec_for(charset: str) -> str | None:
    """The Python codec that decodes what is really sent under `charset`, or ``None``."""
    name = _CHARSET_ALIASES.get(charset, charset)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _decode_bytes(raw: bytes, charset: str, defects: list[str]) -> str:
    codec = _codec_for(charset)
    if codec is None:
        defects.append(f"unknown charset {charset[:40]!r} in encoded-word")
        codec = "utf-8"
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        if codec == "utf-8":
            return raw.decode("latin-1")
        defects.append(f"encoded-word is not valid {charset[:40]}")
        return raw.decode(codec, "replace")


def _decode_word_payload(encoding: str, text: str, defects: list[str]) -> bytes:
    if encoding in "Qq":
        # RFC 2047 §4.2: "_" is a space; a2b_qp(header=True) does that and keeps a bad "=XY".
        return binascii.a2b_qp(text.encode("utf-8", "replace"), header=True)
    data = text.rstrip("=")
    clean = _B64_JUNK.sub("", data)
    if len(clean) != len(data):
        defects.append("encoded-word has characters outside base64")
    if len(clean) % 4 == 1:
        # One dangling sextet cannot make a byte; drop it rather than the whole word.
        clean = clean[:-1]
        defects.append("encoded-word has a truncated base64 payload")
    # Missing padding is common and harmless: add it back.
    return binascii.a2b_base64((clean + "=" * (-len(clean) % 4)).encode("ascii"))


def _decode_encoded_words(text: str, defects: list[str]) -> str:
    if "=?" not in text:
        return text
    # [text, charset, encoding, payload, text, charset, encoding, payload, ..., text]
    parts = _ENCODED_WORD.split(text)
    if len(parts) == 1:
        return text
    out = [parts[0]]
    pending = b""
    pending_charset = ""
    for i in range(1, len(parts), 4):
        charset = parts[i].lower().partition("*")[0]  # RFC 2231 §5: charset*language
        payload = _decode_word_payload(parts[i + 1], parts[i + 2], defects)
        if charset == pending_charset:
            # Join before decoding: encoders split multi-byte characters across words.
            pending += payload
        else:
            if pending_charset:
                out.append(_decode_bytes(pending, pending_charset, defects))
            pending, pending_charset = payload, charset
        between = parts[i + 3]
        # RFC 2047 §6.2: white space between adjacent encoded-words is not displayed.
        if between and not (between.isspace() and i + 4 < len(parts)):
            out.append(_decode_bytes(pending, pending_charset, defects))
            out.append(between)
            pending, pending_charset = b"", ""
    if pending_charset:
        out.append(_decode_bytes(pending, pending_charset, defects))
    decoded = "".join(out)
    # A decoded CR or LF must not survive into a value a host may write into another header.
    if "\r" in decoded or "\n" in decoded:
        decoded = _NEWLINE_RUN.sub(" ", decoded)
    return decoded


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded-words in an unstructured value, leniently.

    Args:
        text: an unfolded field value, such as a ``Subject``.

    Returns:
        The decoded text. Unknown charsets fall back to UTF-8 then latin-1, bad base64 padding
        is repaired, and words split in the middle of a character are joined before decoding.
        Never raises.
    """
    return _decode_encoded_words(text, [])


# --------------------------------------------------------------------------------------------
# Message identifiers (RFC 5322 §3.6.4)
# --------------------------------------------------------------------------------------------

# A well-formed id: dot-atom-ish left part, one "@", no CFWS. See _parse_ids.
# (Explicit ASCII white space: \s checks every character for Unicode spaces, and is slower.)
_PLAIN_ID: Final = re.compile(r"<([^<> \t\r\n()\"@,;\[\]\\]+)@([^<> \t\r\n()\"@,;\\]+)>")
_ONE_PLAIN_ID: Final = re.compile(rf"[ \t\r\n]*{_PLAIN_ID.pattern}[ \t\r\n]*")
_ID_LIST_SEPARATORS: Final = " \t\r\n,"
_BARE_ID_TRIM: Final = ".,;:'\"()[]{}"


def _normalize_id(left: str, domain: str) -> str:
    """The canonical form of an id (module Rule 5): the domain lower-cased, the left kept."""
    return f"{left}@{domain.lower()}"


def _quoted_end(text: str, pos: int) -> tuple[int, bool]:
    """Index just past the quoted string opening at `pos`, and whether it was closed.

    An unterminated string runs to the end of `text`.
    """
    n = len(text)
    pos += 1
    while pos < n:
        ch = text[pos]
        if ch == '"':
            return pos + 1, True
        pos += 2 if ch == "\\" else 1
    return n, False


def _comment_end(text: str, pos: int) -> tuple[int, bool]:
    """Index just past the (nested) comment opening at `pos`, and whether it was closed.

    An unterminated comment runs to the end of `text`.
    """
    n = len(text)
    depth = 0
    while pos < n:
        ch = text[pos]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if not depth:
                return pos + 1, True
        elif ch == "\\":
            pos += 1
        pos += 1
    return n, False


_CFWS_SPECIAL: Final = re.compile(r'["(\\\s]')


def _strip_cfws(text: str, *, keep_space: bool = False) -> str:
    """Remove RFC 5322 comments, and white space unless `keep_space`, outside quoted strings.

    ``<"a b"@example.com>`` keeps its space; with `keep_space` a comment becomes one space, so
    the words around it stay apart.
    """
    if "(" not in text and '"' not in text:
        return text if keep_space else _WS_RUN.sub("", text)
    out: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        match = _CFWS_SPECIAL.search(text, pos)
        if match is None:
            out.append(text[pos:])
            break
        start = match.start()
        out.append(text[pos:start])
        ch = text[start]
        if ch == '"':
            pos = _quoted_end(text, start)[0]
            out.append(text[start:pos])
        elif ch == "(":
            pos = _comment_end(text, start)[0]
            if keep_space:
                out.append(" ")
        elif ch == "\\":
            out.append(text[start : start + 2])
            pos = start + 2
        else:
            if keep_space:
                out.append(ch)
            pos = start + 1
    return "".join(out)


def _clean_id(raw: str, defects: list[str]) -> str | None:
    """Normalise the inside of one ``<...>`` (or a bare id); ``None`` if nothing usable."""
    text = raw
    if "(" in text or " " in text or not text.isprintable():
        text = _strip_cfws(text)
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        defects.append(f"message id longer than {MAX_ID_LENGTH} characters dropped")
        return None
    left, at, domain = text.rpartition("@")
    if not at:
        defects.append(f"message id without '@': {text[:80]!r}")
        return text
    if not left or not domain:
        defects.append(f"message id with an empty part: {text[:80]!r}")
    if "@" in left:
        defects.append(f"message id with more than one '@': {text[:80]!r}")
    return _normalize_id(left, domain)


def _scan_ids(value: str, defects: list[str]) -> list[str]:
    """Slow path: find every id in a messy msg-id list, never stopping at a bad one."""
    if "=?" in value:
        # RFC 2047 §5 forbids encoded-words here, but Python's email package (policy.default)
        # writes In-Reply-To and References that way whenever an id makes the line longer
        # than 78 characters, so replies built with it arrive like this.
        decoded = _decode_encoded_words(value, defects)
        if decoded != value:
            defects.append("encoded-word in a message id field")
            value = decoded
    ids: list[str] = []
    text = _strip_cfws(value, keep_space=True)
    pos = 0
    n = len(text)
    bare: list[str] = []
    while pos < n:
        ch = text[pos]
        if ch == "<":
            close = text.find(">", pos + 1)
            reopen = text.find("<", pos + 1)
            if close < 0 or (0 <= reopen < close):
                stop = reopen if reopen >= 0 else n
                defects.append("unterminated '<' in message id list")
                # "<id@host" followed by more text: take the id-like first word only.
                words = text[pos + 1 : stop].split()
                candidate = words[0] if words else ""
                pos = stop
            else:
                candidate = text[pos + 1 : close]
                pos = close + 1
            cleaned = _clean_id(candidate, defects)
            if cleaned:
                ids.append(cleaned)
        elif ch == '"':
            # A quoted phrase such as "Lars's message of ...": not an id.
            pos = _quoted_end(text, pos)[0]
        elif ch.isspace() or ch in ",;":
            pos += 1
        else:
            end = pos
            while end < n and not text[end].isspace() and text[end] not in '<",;':
                end += 1
            word = text[pos:end].strip(_BARE_ID_TRIM)
            if "@" in word and not word.startswith("@") and not word.endswith("@"):
                bare.append(word)
            pos = end
    # Bare words are ids only where the field has no bracketed id at all: a phrase such as
    # "message from jo@example.com of ..." beside a real <id> must not add a false id.
    if not ids and bare:
        defects.append("message id without angle brackets")
        for word in bare:
            cleaned = _clean_id(word, defects)
            if cleaned:
                ids.append(cleaned)
    return ids


def _parse_ids(value: str, defects: list[str]) -> tuple[str, ...]:
    if value.count("<") == 1:  # Message-ID, In-Reply-To: usually one plain id
        one = _ONE_PLAIN_ID.fullmatch(value)
        if one is not None and one.end(2) - one.start(1) < MAX_ID_LENGTH:
            return (one[1] + "@" + one[2].lower(),)
    # Fast path: split on well-formed ids; if only whitespace and commas are left between
    # them, the field is plain. One regex pass, no per-character Python.
    parts = _PLAIN_ID.split(value)
    if len(parts) > 1 and not "".join(parts[::3]).strip(_ID_LIST_SEPARATORS):
        ids = [
            left + "@" + domain.lower()
            for left, domain in zip(parts[1::3], parts[2::3], strict=True)
        ]
        if len(value) > MAX_ID_LENGTH and any(len(i) > MAX_ID_LENGTH for i in ids):
            ids = [i for i in ids if len(i) <= MAX_ID_LENGTH]
            defects.append(f"message id longer than {MAX_ID_LENGTH} characters dropped")
    else:
        ids = _scan_ids(value, defects)
    if not ids and value and not value.isspace():
        defects.append(f"no message id found in {value.strip()[:80]!r}")
    if len(ids) > MAX_IDS_PER_FIELD:
        defects.append(f"{len(ids)} message ids in one field; kept the first and the newest")
        ids = ids[:KEEP_FIRST_IDS] + ids[len(ids) - (MAX_IDS_PER_FIELD - KEEP_FIRST_IDS) :]
    return tuple(ids)


def parse_msg_ids(value: str) -> tuple[str, ...]:
    """Find every message identifier in a ``Message-ID``, ``In-Reply-To`` or ``References`` value.

    Lenient: comments, quoted phrases, commas, semicolons, missing brackets, ids with two
    ``@`` or a ``[...]`` domain literal are all handled, and a bad id never hides the ones after
    it.

    Args:
        value: the field value, folded or unfolded.

    Returns:
        The ids in order, normalised (no brackets or CFWS, domain lower-cased), at most
        `MAX_IDS_PER_FIELD` of them. Never raises.
    """
    return _parse_ids(value, [])


def parse_msg_id(value: str) -> str:
    """Parse exactly one well-formed message identifier, strictly.

    Use it to validate an id a host or a provider hands over, such as the Message-ID a
    provider assigned to a send.

    Args:
        value: ``<left@right>``, with or without the brackets, surrounding whitespace allowed.

    Returns:
        The normalised id (no brackets, domain lower-cased).

    Raises:
        ParseError: the value is not exactly one ``left@right`` id without whitespace,
            comments, or characters that cannot appear in an RFC 5322 msg-id.
    """
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    left, at, domain = text.rpartition("@")
    if (
        not at
        or not left
        or not domain
        or len(text) > MAX_ID_LENGTH
        or not _STRICT_ID_PART.fullmatch(left)
        or not _STRICT_ID_PART.fullmatch(domain)
    ):
        raise ParseError(f"not a message id: {value[:100]!r}", value=value[:1000])
    return _normalize_id(left, domain)


# RFC 5322 §3.6.4 id-left (dot-atom-text) and id-right (dot-atom-text or no-fold-literal).
_STRICT_ID_PART: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*|\[[!-Z^-~]*\]"
)


def normalize_msg_id(value: str) -> str | None:
    """Return the first id in `value`, normalised, or ``None`` when there is none.

    Args:
        value: a msg-id, with or without brackets, as stored by a host or read from a header.

    Returns:
        The id in replytrack's canonical form (see the module's Rule 5). Never raises.
    """
    ids = _parse_ids(value, [])
    return ids[0] if ids else None


# --------------------------------------------------------------------------------------------
# Addresses (RFC 5322 §3.4)
# --------------------------------------------------------------------------------------------


def address_key(addr: str) -> str:
    """Return the comparison key of an address: lower case, the domain in ASCII (IDNA) form.

    `Address` equality is equality of this key; stores index participants by it.

    Args:
        addr: an addr-spec such as ``"Jo@Bücher.example"``.

    Returns:
        The key, e.g. ``"jo@xn--bcher-kva.example"``. Never raises.
    """
    local, at, domain = addr.rpartition("@")
    if at and not domain.isascii():
        with contextlib.suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
    return f"{local}{at}{domain}".lower()


@attrs.frozen
class Address:
    """One mailbox: a display name and an address.

    Two addresses are equal when their ``addr`` is, compared case-insensitively with the
    domain in its IDNA (ASCII) form; the display name does not take part. ``addr`` is ``""``
    for the null path ``<>`` and has no ``@`` for a domain-less mailbox such as
    ``MAILER-DAEMON``.
    """

    name: str = attrs.field(eq=False)
    addr: str = attrs.field(eq=address_key)

    @property
    def local(self) -> str:
        """The part before the last ``@`` (the whole address when there is no ``@``)."""
        local, at, _ = self.addr.rpartition("@")
        return local if at else self.addr

    @property
    def domain(self) -> str:
        """The domain, lower-cased, or ``""`` when the address has none."""
        return self.addr.rpartition("@")[2].lower() if "@" in self.addr else ""

    def __str__(self) -> str:
        """The address for people to read: ``"Ops, Revenue" <revops@example.com>``.

        Non-ASCII names stay as they are; to write a header, use `email.utils.formataddr`,
        which RFC 2047-encodes them.
        """
        if not self.name:
            return self.addr or "<>"
        name = self.name
        if any(ch in name for ch in _NAME_SPECIALS):
            # Quoted as in a header, so "Ops, Revenue" does not read as two names.
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.addr}>"


_NAME_SPECIALS: Final = frozenset('",;:<>()[]@\\')


# The common case, checked as a whole: comma-separated mailboxes "Name <a@b>", "\"Name\" <a@b>"
# or "a@b", with no comments, groups or routes. Anything else takes the full tokenizer.
# Groups: quoted name, plain name (white space around it is trimmed later), angle addr, bare
# addr. Greedy runs and ASCII white space only: lazy quantifiers and \s cost per character.
_FAST_MAILBOX_ITEM: Final = re.compile(
    r"""[ \t\r\n]*(?:(?:"((?:[^"\\\r\n]|\\.)*)"[ \t\r\n]*|([^<>,@"()\\:;]*))"""
    r"""<([^<> \t\r\n,"()\\:;@]+@[^<> \t\r\n,"()\\:;@]+)>"""
    r"""|([^<> \t\r\n,"()\\:;@]+@[^<> \t\r\n,"()\\:;@]+))[ \t\r\n]*"""
)
_QUOTED_PAIR: Final = re.compile(r"\\(.)")
_DOT_ATOM: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_WS_RUN: Final = re.compile(r"\s+")


def _tokenize_address_list(value: str, defects: list[str]) -> Iterator[tuple[str, str]]:
    """Yield (kind, text) tokens: quoted, comment, angle, atom, ',', ':' and ';'."""
    pos = 0
    n = len(value)
    while pos < n:
        ch = value[pos]
        if ch.isspace():
            pos += 1
        elif ch == '"':
            end, closed = _quoted_end(value, pos)
            if not closed:
                # A stray quote would swallow the rest of the list; read on without it.
                defects.append("unterminated quoted string in address list")
                pos += 1
                continue
            inner = value[pos + 1 : end - 1]
            yield "quoted", _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
            pos = end
        elif ch == "(":
            end, closed = _comment_end(value, pos)
            if not closed:
                defects.append("unterminated comment in address list")
            yield "comment", value[pos + 1 : end - 1 if closed else end]
            pos = end
        elif ch == "<":
            close = value.find(">", pos + 1)
            if close < 0:
                # "<jo@example.com, Bo <bo@...>": stop at the next comma, keep the others.
                defects.append("unterminated '<' in address list")
                comma = value.find(",", pos + 1)
                close = n if comma < 0 else comma
                yield "angle", value[pos + 1 : close]
                pos = close
            else:
                yield "angle", value[pos + 1 : close]
                pos = close + 1
        elif ch in ",:;":
            yield ch, ch
            pos += 1
        elif ch == ">":
            defects.append("stray '>' in address list")
            pos += 1
        else:
            start = pos
            while pos < n and not value[pos].isspace() and value[pos] not in '"(<>,:;':
                pos += 1
            yield "atom", value[start:pos]


def _quote_if_needed(text: str) -> str:
    """Quote a local part that is not a dot-atom (RFC 5322 §3.4.1)."""
    if _DOT_ATOM.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _angle_addr(text: str) -> str:
    """The addr-spec inside ``<...>``: CFWS removed, an obsolete source route dropped."""
    text = _strip_cfws(text)
    if text.startswith("@") and ":" in text:
        text = text.partition(":")[2]  # RFC 5322 §4.4 obs-route: <@relay1,@relay2:user@host>
    return text


def _finish_mailbox(tokens: list[tuple[str, str]], defects: list[str], out: list[Address]) -> None:
    """Turn the tokens of one list entry into an `Address` appended to `out`, or a defect."""
    if not tokens:
        return
    angles = [text for kind, text in tokens if kind == "angle"]
    comments = [text for kind, text in tokens if kind == "comment"]
    if angles:
        if len(angles) > 1:
            defects.append("mailbox with more than one '<...>'; used the last")
        addr = _angle_addr(angles[-1])
        # The display name is what stands before the angle address.
        words: list[str] = []
        for kind, text in tokens:
            if kind == "angle":
                break
            if kind in ("atom", "quoted"):
                words.append(text)
        name = " ".join(words)
        if not name and comments:
            name = comments[0]
    else:
        # An addr-spec alone: its words are the address; a quoted local part keeps its quotes.
        words = [
            _quote_if_needed(text) if kind == "quoted" else text
            for kind, text in tokens
            if kind in ("atom", "quoted")
        ]
        name = comments[0].strip() if comments else ""
        if not words:
            return
        if len(words) == 1:
            addr = words[0]
        else:
            # Obsolete syntax allows CFWS around the dots and "@" of an addr-spec
            # ("jo . doe @ example.com"), so first read all words as one address; else it is a
            # "Name addr@host" without brackets.
            joined = "".join(words)
            at_words = [w for w in words if "@" in w]
            if joined.count("@") == 1 and any(w[:1] in ".@" or w[-1:] in ".@" for w in words):
                addr = joined
            elif len(at_words) == 1:
                defects.append("display name without angle brackets around the address")
                addr = at_words[0]
                name = name or " ".join(w for w in words if w != addr)
            else:
                defects.append(f"not an address: {' '.join(words)[:80]!r}")
                return
    name = _WS_RUN.sub(" ", _decode_encoded_words(name, defects)).strip()
    local, at, domain = addr.rpartition("@")
    if at and (not local or not domain):
        defects.append(f"not an address (empty part): {addr[:80]!r}")
        return
    out.append(Address(name, addr))


def _parse_addresses(value: str, defects: list[str]) -> tuple[Address, ...]:
    # Fast path: split on plain mailboxes; if only whitespace and commas are left between
    # them, the list is plain. One regex pass, no per-character Python.
    parts = _FAST_MAILBOX_ITEM.split(value)
    if not "".join(parts[::5]).strip(_ID_LIST_SEPARATORS):
        fast: list[Address] = []
        groups = zip(parts[1::5], parts[2::5], parts[3::5], parts[4::5], strict=True)
        for quoted, plain, angle, bare in groups:
            if bare is not None:
                fast.append(Address("", bare))
                continue
            name = quoted or plain or ""
            if "\\" in name and quoted:
                name = _QUOTED_PAIR.sub(r"\1", name)
            if "=?" in name:
                name = _decode_encoded_words(name, defects)
            fast.append(Address(" ".join(name.split()) if name else "", angle))
        return tuple(fast)
    out: list[Address] = []
    tokens: list[tuple[str, str]] = []
    for kind, text in _tokenize_address_list(value, defects):
        if kind == ",":
            _finish_mailbox(tokens, defects, out)
            tokens = []
        elif kind == ":":
            # A group (RFC 5322 §3.4): "Name: a@b, c@d;". The group name is not an address.
            if any(k == "angle" for k, _ in tokens):
                tokens.append(("atom", ":"))
            else:
                tokens = []
        elif kind == ";":
            _finish_mailbox(tokens, defects, out)
            tokens = []
        else:
            tokens.append((kind, text))
    _finish_mailbox(tokens, defects, out)
    return tuple(out)


def parse_addresses(value: str) -> tuple[Address, ...]:
    """Parse an address list (``From``, ``To``, ``Cc`` ...), one address at a time.

    Handles groups (``undisclosed-recipients:;``), quoted and RFC 2047-encoded display names,
    comments (``jo@example.com (Jo)``), ``<>``, domain-less mailboxes (``MAILER-DAEMON``) and
    obsolete routes. Unlike the standard library's ``getaddresses``, which returns
    ``[('', '')]`` for the whole field on one error, a bad entry is skipped and the others kept.

    Args:
        value: the field value, folded or unfolded.

    Returns:
        The addresses in order. Never raises.
    """
    return _parse_addresses(value, [])


def parse_address(value: str) -> Address:
    """Parse exactly one mailbox, strictly.

    Args:
        value: ``"Name <local@domain>"`` or ``local@domain``.

    Returns:
        The address.

    Raises:
        ParseError: the value is not exactly one mailbox with a non-empty local part and
            domain, or it is malformed.
    """
    defects: list[str] = []
    found = _parse_addresses(value, defects)
    if defects or len(found) != 1 or not found[0].local or not found[0].domain:
        detail = defects[0] if defects else f"{len(found)} addresses"
        raise ParseError(f"not a single mailbox ({detail}): {value[:100]!r}", value=value[:1000])
    return found[0]


# --------------------------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------------------------

# Reply and forward markers in the languages sales mail meets. Each must be followed by a
# colon (ASCII or full-width), optionally with a counter: "Re[2]:", "Re(2):", "Re^2:".
_SUBJECT_PREFIXES: Final = (
    "re|fwd?|fw|aw|wg|sv|vs|vb|vl|antw|antwort|doorst|rif|r|i|tr|enc|res|rv|ref|odp|pd|ynt"
    "|ilt|İlt|vá|továbbítás|továbbítva|atb|pārs|ats|fs|πρθ|απ|σχετ|ответ|отв|пересл|הועבר|השב"
    "|回复|回覆|答复|答覆|转发|轉寄|轉發|返信|転送|답장|회신|전달"
)
_SUBJECT_PREFIX_RUN: Final = re.compile(
    rf"^(?:\s*(?:\[[^\]]*\]|(?:{_SUBJECT_PREFIXES})\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]))+",
    re.IGNORECASE,
)
_SUBJECT_FWD_SUFFIX: Final = re.compile(r"\s*\((?:fwd|fw)\)\s*$", re.IGNORECASE)


def normalize_subject(subject: str) -> str:
    """Strip reply/forward prefixes, counters and list tags from a subject.

    ``"RE: AW: [sales] Fwd: Re[2]:  Pricing  for Q1"`` becomes ``"Pricing for Q1"``. Prefixes
    in the common languages are known (Re, Fwd, Fw, AW, WG, SV, VS, Antw, RIF, R, I, TR, Enc,
    RES, RV, Odp, YNT, 回复, 转发, 답장, 返信 ...), case does not matter, a trailing "(fwd)" goes
    too, and runs of white space become one space. Case is kept: compare with ``casefold()``.

    Args:
        subject: a decoded subject.

    Returns:
        The bare subject; applying the function again changes nothing. Never raises.
    """
    text = _WS_RUN.sub(" ", subject).strip()
    text = _SUBJECT_PREFIX_RUN.sub("", text)
    text = _SUBJECT_FWD_SUFFIX.sub("", text).strip()
    # A stripped suffix can expose a prefix-only remainder (e.g. "Re: (fwd)"); strip again.
    return _SUBJECT_PREFIX_RUN.sub("", text).strip()


# --------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------


def _parse_date(value: str, defects: list[str]) -> _dt.datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append(f"unparsable date: {value[:80]!r}")
        return None
    if parsed.tzinfo is None:
        # RFC 5322 §3.3: "-0000" (and obsolete military zones) mean UTC with no local offset
        # known; the stdlib returns those naive.
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed


# --------------------------------------------------------------------------------------------
# The Headers value
# --------------------------------------------------------------------------------------------

_T = TypeVar("_T")

_NO_IDS: Final[tuple[str, ...]] = ()
_NO_ADDRESSES: Final[tuple[Address, ...]] = ()
# Structured fields checked when `Headers.defects` is read.
_ID_FIELDS: Final = ("message-id", "in-reply-to", "references")
_ADDRESS_FIELDS: Final = ("from", "sender", "reply-to", "to", "cc")


@attrs.frozen(eq=False, repr=False)
class Headers:
    """The parsed header block of one message. Build it with `parse_headers`.

    Field names are matched case-insensitively. Where a field appears more than once, the
    single-valued accessors read the first occurrence, as the standard library does.
    Structured fields are parsed when first read and cached; `defects` parses them all.
    Two `Headers` are equal when their raw fields are.
    """

    _raw: tuple[tuple[str, str], ...]
    _first: dict[str, str]
    _block_defects: tuple[str, ...]
    _cache: dict[str, tuple[Any, tuple[str, ...]]] = attrs.field(factory=dict)

    # -- generic access ----------------------------------------------------------------------

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """Every field in order as ``(name, value)``: names as written, values unfolded."""
        return tuple((name, _unfold(value)) for name, value in self._raw)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: _T) -> str | _T: ...
    def get(self, name: str, default: _T | None = None) -> str | _T | None:
        """Return the first value of field `name`, unfolded and RFC 2047-decoded.

        Args:
            name: the field name, any case.
            default: returned when the field is absent.
        """
        raw = self._first.get(name.lower())
        if raw is None:
            return default
        return _decode_encoded_words(_unfold(raw), [])

    def get_all(self, name: str) -> tuple[str, ...]:
        """Return every value of field `name` in order, unfolded and RFC 2047-decoded."""
        key = name.lower()
        return tuple(
            _decode_encoded_words(_unfold(value), [])
            for field_name, value in self._raw
            if field_name.lower() == key
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return (
            f"<Headers message_id={self.message_id!r} subject={self.subject!r} "
            f"fields={len(self._raw)}>"
        )

    # -- structured fields -------------------------------------------------------------------

    def _parsed(self, key: str, parse: Callable[[str, list[str]], _T], empty: _T) -> _T:
        """Parse field `key` once, cache the result and its defects; `empty` when absent."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit[0]  # type: ignore[no-any-return]
        raw = self._first.get(key)
        defects: list[str] = []
        result = empty if raw is None else parse(raw, defects)
        self._cache[key] = (result, tuple(f"{key}: {d}" for d in defects) if defects else ())
        return result

    @property
    def message_id(self) -> str | None:
        """The message's own id, normalised (see `parse_msg_ids`), or ``None``."""
        ids = self._parsed("message-id", _parse_ids, _NO_IDS)
        return ids[0] if ids else None

    @property
    def in_reply_to(self) -> tuple[str, ...]:
        """The ids of the messages this one replies to, normalised."""
        return self._parsed("in-reply-to", _parse_ids, _NO_IDS)

    @property
    def references(self) -> tuple[str, ...]:
        """The ``References`` ids, oldest first, normalised."""
        return self._parsed("references", _parse_ids, _NO_IDS)

    @property
    def from_(self) -> tuple[Address, ...]:
        """The authors (``From``; usually one)."""
        return self._parsed("from", _parse_addresses, _NO_ADDRESSES)

    @property
    def sender(self) -> tuple[Address, ...]:
        """The ``Sender`` (the agent that sent on behalf of ``From``)."""
        return self._parsed("sender", _parse_addresses, _NO_ADDRESSES)

    @property
    def reply_to(self) -> tuple[Address, ...]:
        """The ``Reply-To`` addresses."""
        return self._parsed("reply-to", _parse_addresses, _NO_ADDRESSES)

    @property
    def to(self) -> tuple[Address, ...]:
        """The ``To`` addresses."""
        return self._parsed("to", _parse_addresses, _NO_ADDRESSES)

    @property
    def cc(self) -> tuple[Address, ...]:
        """The ``Cc`` addresses."""
        return self._parsed("cc", _parse_addresses, _NO_ADDRESSES)

    @property
    def subject(self) -> str | None:
        """The subject, unfolded and RFC 2047-decoded, or ``None`` when absent."""
        return self._parsed("subject", _parse_subject, None)

    @property
    def date(self) -> _dt.datetime | None:
        """The ``Date`` as an aware datetime, or ``None`` when absent or unparsable."""
        return self._parsed("date", _parse_date_field, None)

    @property
    def defects(self) -> tuple[str, ...]:
        """What was malformed: the block itself and every structured field above."""
        for key in _ID_FIELDS:
            self._parsed(key, _parse_ids, _NO_IDS)
        for key in _ADDRESS_FIELDS:
            self._parsed(key, _parse_addresses, _NO_ADDRESSES)
        self._parsed("subject", _parse_subject, None)
        self._parsed("date", _parse_date_field, None)
        found = list(self._block_defects)
        for key in (*_ID_FIELDS, *_ADDRESS_FIELDS, "subject", "date"):
            found.extend(self._cache[key][1])
        return tuple(found)


def _parse_subject(raw: str, defects: list[str]) -> str:
    return _decode_encoded_words(_unfold(raw), defects)


def _parse_date_field(raw: str, defects: list[str]) -> _dt.datetime | None:
    return _parse_date(_unfold(raw), defects)


def _from_text(text: str, defects: list[str]) -> Headers:
    raw = _FIELD.findall(text)
    if text[:1] in (" ", "\t"):
        defects.append("header block starts with a continuation line; ignored")
    # Reversed, so that the first occurrence of a repeated field wins.
    first = {name.lower(): value for name, value in reversed(raw)}
    return Headers(tuple(raw), first, tuple(defects))


_BARE_LINE_BREAK: Final = re.compile(r"\r?\n(?![ \t])|\r(?![\n \t])")


def _message_text(message: email.message.Message) -> str:
    lines = []
    for name, value in message.raw_items():
        text = str(value)
        # A value set by a program may hold a bare line break; keep it one field.
        text = _BARE_LINE_BREAK.sub(" ", text)
        lines.append(f"{name}: {text}\n")
    return "".join(lines)


def parse_headers(data: bytes | bytearray | memoryview | str | email.message.Message) -> Headers:
    """Parse the header block of a message, leniently.

    Args:
        data: the raw message (or only its header block) as bytes or str, or a message already
            parsed by the standard library (any policy). Only the header block is read.

    Returns:
        A `Headers` value. Never raises: malformed input yields what could be read, with
        `Headers.defects` saying what was wrong.
    """
    defects: list[str] = []
    if isinstance(data, bytes):
        raw = data
    elif isinstance(data, str):
        raw = text_to_bytes(data)
    elif isinstance(data, email.message.Message):
        raw = text_to_bytes(_message_text(data))
    elif isinstance(data, (bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise TypeError(f"parse_headers() takes bytes, str or a Message, not {type(data)!r}")
    block = _cut_block(raw, defects)
    # CRs of CRLF line ends stay in the text: the field regex splits on LF alone, and
    # unfolding drops them (cheaper than a copy of the whole block without them).
    return _from_text(_decode_block(block, defects), defects)
