"""Hypothesis strategies for hostile mail: header blocks, msg-id lists, addresses, MIME, DSNs.

Mail that reaches a reply tracker is written by every client, relay and spammer there is. These
strategies build it the way they write it - folded lines, every line ending, 8-bit bytes,
RFC 2047 encoded-words with broken charsets, nested comments, msg-id lists with junk, MIME
trees with bad boundaries, delivery status notifications with broken per-recipient blocks -
so that properties reach the deep branches of the parsers, not only their first check.

Every strategy here is composable: the small ones (`msg_ids`, `mailboxes`, `encoded_words`
...) return ``str`` field values, `header_fields` returns ``(name, value)`` pairs,
`header_blocks` renders fields into the bytes of a header block, and `mime_trees`, `dsns` and
`messages` return whole messages as ``bytes``. Import it from any test (``tests`` is on
``sys.path``)::

    from strategies import messages, msg_id_lists

Sizes stay small (a few KB) so that a property runs hundreds of examples in seconds; the
pathological sizes live in ``tests/unit/test_pathological.py``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import string
from collections.abc import Sequence
from typing import Literal

from hypothesis import strategies as st

from replytrack.threadindex import Layout, ThreadIndex

__all__ = [
    "CHARSETS",
    "address_lists",
    "comments",
    "dates",
    "dsns",
    "encoded_words",
    "fold",
    "header_blocks",
    "header_fields",
    "mailboxes",
    "messages",
    "mime_trees",
    "msg_id_lists",
    "msg_ids",
    "quoted_strings",
    "subjects",
    "thread_index_values",
]

# --------------------------------------------------------------------------------------------
# Atoms
# --------------------------------------------------------------------------------------------

_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
atoms = st.text(_ATEXT, min_size=1, max_size=10)
dot_atoms = st.lists(atoms, min_size=1, max_size=3).map(".".join)
_labels = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
domains = st.one_of(
    st.lists(_labels, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["[192.0.2.1]", "[IPv6:2001:db8::1]", "bücher.example", "EXAMPLE.COM"]),
)
# Text a header may hold: printable ASCII mostly, some Unicode, some control characters.
# mypy infers ("Cs",) as tuple[str], not a collection of the category literals: say it here.
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_ANY_CHAR = st.characters(codec="utf-8", exclude_categories=_SURROGATES)
words = st.one_of(
    st.text(string.ascii_letters + string.digits, min_size=1, max_size=8),
    st.text(_ANY_CHAR, min_size=1, max_size=6),
    st.sampled_from(["Re:", "AW:", "Fwd:", "[sales]", "回复:", "Out of Office", "\x00", "\x7f"]),
)
phrases = st.lists(words, min_size=1, max_size=4).map(" ".join)

#: Charsets as labelled in the wild: right, mislabelled, unknown, and names of codecs that are
#: not text encodings at all (a charset is attacker-chosen text).
CHARSETS: Sequence[str] = (
    "utf-8",
    "UTF-8",
    "iso-8859-1",
    "windows-1252",
    "gb2312",
    "shift_jis",
    "ks_c_5601-1987",
    "koi8-r",
    "us-ascii",
    "utf-8*en",
    "unknown-8bit",
    "x-unknown",
    "bogus-charset",
    "",
    "base64",
    "zlib",
    "rot13",
    "idna",
    "punycode",
    "undefined",
    "utf-16",
    "utf-7",
    "utf-8\x00",
)


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded-word: valid, or broken in one of the ways senders break them."""
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from("qQbBx"))
    text = draw(st.text(_ANY_CHAR, max_size=12))
    codec = charset.partition("*")[0] or "utf-8"
    try:
        raw = text.encode(codec)
    except (LookupError, UnicodeError, ValueError, TypeError):
        raw = text.encode("utf-8")
    kind = draw(st.sampled_from(["good", "good", "junk", "truncated", "unpadded"]))
    if encoding in "bB":
        payload = base64.b64encode(raw).decode("ascii")
        if kind == "unpadded":
            payload = payload.rstrip("=")
    else:
        payload = binascii.b2a_qp(raw, header=True).decode("ascii").replace("?", "=3F")
    if kind == "junk":
        payload += draw(st.sampled_from(["=", "==", "!", " ", "=ZZ", "?", "\t"]))
    word = f"=?{charset}?{encoding}?{payload}?="
    if kind == "truncated":
        word = word[: draw(st.integers(2, max(2, len(word) - 1)))]
    return word


@st.composite
def comments(draw: st.DrawFn, depth: int = 3) -> str:
    """An RFC 5322 comment, nested up to `depth`, with escapes; sometimes unterminated."""
    inner = draw(st.lists(st.one_of(phrases, st.just("\\)"), st.just("\\(")), max_size=3))
    if depth > 0 and draw(st.booleans()):
        inner.append(draw(comments(depth - 1)))
    text = "(" + " ".join(inner)
    return text if draw(st.integers(0, 9)) == 0 else text + ")"


@st.composite
def quoted_strings(draw: st.DrawFn) -> str:
    """A quoted string with quoted-pairs; sometimes unterminated."""
    pieces = st.one_of(st.text(_ANY_CHAR, max_size=3), st.sampled_from(['\\"', "\\\\", ","]))
    body = "".join(draw(st.lists(pieces, max_size=5)))
    body = body.replace('"', '\\"') if draw(st.booleans()) else body
    return '"' + body + ("" if draw(st.integers(0, 9)) == 0 else '"')


def _cfws() -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), st.just(" "), st.just("\r\n "), comments(1))


@st.composite
def fold(draw: st.DrawFn, value: str) -> str:
    """`value` with some of its spaces turned into folds (RFC 5322 §2.2.3), CRLF or LF."""
    if " " not in value:
        return value
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    pieces = value.split(" ")
    out = [pieces[0]]
    for piece in pieces[1:]:
        out.append(draw(st.sampled_from([" ", newline + " ", newline + "\t", "  "])) + piece)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Message identifiers
# --------------------------------------------------------------------------------------------


@st.composite
def msg_ids(draw: st.DrawFn) -> str:
    """One msg-id as found in headers: mostly well formed, often not."""
    left = draw(st.one_of(dot_atoms, quoted_strings(), atoms.map(lambda a: a + "." + a)))
    domain = draw(domains)
    shape = draw(
        st.sampled_from(
            [
                "plain",
                "plain",
                "plain",
                "cfws",
                "bare",
                "two_at",
                "no_at",
                "empty_left",
                "unterminated",
                "stray_close",
                "long",
                "encoded",
            ]
        )
    )
    if shape == "plain":
        return f"<{left}@{domain}>"
    if shape == "cfws":
        return f"{draw(_cfws())}<{draw(_cfws())}{left}{draw(_cfws())}@{domain}{draw(_cfws())}>"
    if shape == "bare":
        return f"{left}@{domain}"
    if shape == "two_at":
        return f"<{left}@{left}@{domain}>"
    if shape == "no_at":
        return f"<{left}>"
    if shape == "empty_left":
        return f"<@{domain}>"
    if shape == "unterminated":
        return f"<{left}@{domain}"
    if shape == "stray_close":
        return f"{left}@{domain}>"
    if shape == "long":
        return f"<{'x' * draw(st.integers(990, 1010))}@{domain}>"
    return draw(encoded_words())


@st.composite
def msg_id_lists(draw: st.DrawFn, max_ids: int = 8) -> str:
    """A References / In-Reply-To value: ids with separators, junk phrases and folding."""
    items = draw(st.lists(msg_ids(), max_size=max_ids))
    junk = st.sampled_from(
        [
            ",",
            ";",
            " ",
            "\t",
            '"Lars\'s message of Mon, 1 Mar"',
            "(message from Jo)",
            "message from jo@example.com of Mon",
            "=?utf-8?q?_?=",
            ">",
            "<",
            "()",
        ]
    )
    out = []
    for item in items:
        out.append(item)
        out.append(draw(st.one_of(st.just(" "), junk)))
    return draw(fold(" ".join(out)))


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


@st.composite
def mailboxes(draw: st.DrawFn) -> str:
    """One mailbox, in one of the many shapes of RFC 5322 §3.4 and of its violations."""
    local = draw(st.one_of(dot_atoms, quoted_strings()))
    addr = f"{local}@{draw(domains)}"
    name = draw(st.one_of(phrases, quoted_strings(), encoded_words(), st.just("")))
    shape = draw(
        st.sampled_from(
            [
                "angle",
                "angle",
                "bare",
                "comment",
                "route",
                "null",
                "no_domain",
                "unbracketed",
                "unterminated",
                "two_angles",
                "cfws_everywhere",
            ]
        )
    )
    if shape == "angle":
        return f"{name} <{addr}>"
    if shape == "bare":
        return addr
    if shape == "comment":
        return f"{addr} {draw(comments())}"
    if shape == "route":
        return f"{name} <@relay.example,@other.example:{addr}>"
    if shape == "null":
        return "<>"
    if shape == "no_domain":
        return draw(st.sampled_from(["MAILER-DAEMON", "postmaster", "<postmaster>"]))
    if shape == "unbracketed":
        return f"{name} {addr}"
    if shape == "unterminated":
        return f"{name} <{addr}"
    if shape == "two_angles":
        return f"<{addr}> <{addr}>"
    c = draw(comments(1))
    return f"{c}{name}{c}<{c}{local}{c}@{c}{draw(domains)}{c}>{c}"


@st.composite
def address_lists(draw: st.DrawFn, max_size: int = 5) -> str:
    """An address list (From, To, Cc ...): mailboxes, groups, stray separators, folding."""
    items = draw(st.lists(mailboxes(), max_size=max_size))
    if len(items) > 0 and draw(st.booleans()):
        # A group (RFC 5322 §3.4): "Name: a, b;", possibly empty or unterminated.
        cut = draw(st.integers(0, len(items)))
        end = draw(st.sampled_from([";", "", ";;"]))
        group = f"{draw(phrases)}: {', '.join(items[:cut])}{end}"
        items = [group, *items[cut:]]
    separator = draw(st.sampled_from([", ", ",", " , ", ",,", "; ", " "]))
    return draw(fold(separator.join(items)))


# --------------------------------------------------------------------------------------------
# Other fields
# --------------------------------------------------------------------------------------------


@st.composite
def subjects(draw: st.DrawFn) -> str:
    """A subject: reply prefixes in many languages, list tags, encoded-words, junk."""
    parts = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["Re:", "RE:", "AW:", "Fwd:", "WG:", "[tag]", "Re[2]:", "回复:"]),
                encoded_words(),
                phrases,
            ),
            max_size=6,
        )
    )
    return draw(fold(" ".join(parts)))


@st.composite
def dates(draw: st.DrawFn) -> str:
    """A Date value: RFC 5322, obsolete zones, or nonsense."""
    moment = draw(
        st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1))
    )
    good = moment.strftime("%a, %d %b %Y %H:%M:%S")
    return draw(
        st.sampled_from(
            [
                good + " +0000",
                good + " -0000",
                good + " GMT",
                good + " Z",
                good + " +9999",
                moment.strftime("%d %b %y %H:%M"),
                "Mon, 31 Feb 2027 25:61:61 +0100",
                "yesterday",
                "",
                "Thu, 1 Jan 1970 00:00:00 +0000 (UTC)",
            ]
        )
    )


@st.composite
def thread_index_values(draw: st.DrawFn) -> str:
    """A Thread-Index value: a real one (possibly with replies), or one corrupted."""
    moment = draw(
        st.datetimes(
            min_value=dt.datetime(1900, 1, 1),
            max_value=dt.datetime(2050, 1, 1),
            timezones=st.just(dt.timezone.utc),
        )
    )
    index = ThreadIndex.new(
        moment, draw(st.binary(min_size=16, max_size=16)), layout=draw(st.sampled_from(Layout))
    )
    for _ in range(draw(st.integers(0, 3))):
        index = index.child(moment + dt.timedelta(days=draw(st.integers(0, 400))), random=0)
    value = index.encode()
    damage = draw(st.sampled_from(["none", "none", "cut", "junk", "fold", "unpadded"]))
    if damage == "cut":
        value = value[: draw(st.integers(0, len(value)))]
    elif damage == "junk":
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from(["!", "=", "\x00", "é", "-"])) + value[at:]
    elif damage == "fold":
        value = "\r\n ".join(value[i : i + 20] for i in range(0, len(value), 20))
    elif damage == "unpadded":
        value = value.rstrip("=")
    return value


_FIELD_KINDS = {
    "Message-ID": msg_id_lists(max_ids=2),
    "In-Reply-To": msg_id_lists(max_ids=3),
    "References": msg_id_lists(),
    "From": address_lists(max_size=2),
    "Sender": address_lists(max_size=1),
    "Reply-To": address_lists(max_size=2),
    "To": address_lists(),
    "Cc": address_lists(),
    "Subject": subjects(),
    "Date": dates(),
    "Thread-Index": thread_index_values(),
    "Content-Type": st.sampled_from(
        [
            "text/plain; charset=utf-8",
            "text/html; charset=bogus",
            "multipart/mixed; boundary=b",
            "multipart/report; report-type=delivery-status; boundary=b",
            'text/plain; charset="utf-8\x00"',
            "text/plain;;;;; charset*=utf-8''%E2%82%AC",
            "message/rfc822",
        ]
    ),
    "Auto-Submitted": st.sampled_from(["auto-replied", "no", "auto-generated (vacation)", ""]),
    "X-Failed-Recipients": address_lists(max_size=2),
}


@st.composite
def header_fields(draw: st.DrawFn) -> tuple[str, str]:
    """One ``(name, value)`` field: a field replytrack reads, with a value of its kind."""
    if draw(st.integers(0, 5)) == 0:
        name = draw(
            st.one_of(
                st.sampled_from(
                    ["X-Mailer", "Received", "DKIM-Signature", "Content-Transfer-Encoding"]
                ),
                st.text(string.ascii_letters + "-", min_size=1, max_size=12),
            )
        )
        return name, draw(st.one_of(phrases, encoded_words(), st.just("")))
    key = draw(st.sampled_from(sorted(_FIELD_KINDS)))
    name = key
    if draw(st.integers(0, 3)) == 0:
        name = key.upper() if draw(st.booleans()) else key.lower()
    return name, draw(_FIELD_KINDS[key])


@st.composite
def header_blocks(
    draw: st.DrawFn,
    fields: st.SearchStrategy[list[tuple[str, str]]] | None = None,
    *,
    end: bool = True,
) -> bytes:
    """The bytes of a header block: `fields` (default: `header_fields`) rendered as senders do.

    Line endings are CRLF, LF or (rarely) CR alone; some lines carry raw 8-bit bytes
    (UTF-8 or latin-1); a block may start with a BOM or an mbox ``From `` line, have a
    continuation line first, or lack its final empty line (`end` false leaves it off).
    """
    items = draw(fields if fields is not None else st.lists(header_fields(), max_size=12))
    newline = draw(st.sampled_from(["\r\n", "\r\n", "\n", "\n", "\r"]))
    out = bytearray()
    start = draw(
        st.sampled_from(
            ["", "", "", "\ufeff", "From jo@example.com Mon Mar  1 09:30 2027\n", " x\n"]
        )
    )
    out += start.encode("utf-8")
    for name, value in items:
        separator = draw(st.sampled_from([": ", ":", " : ", ":\t"]))
        line = f"{name}{separator}{value}".replace("\r\n", "\n").replace("\n", newline)
        charset = draw(st.sampled_from(["utf-8", "utf-8", "latin-1"]))
        out += line.encode(charset, "replace") + newline.encode()
    if end:
        out += newline.encode()
    return bytes(out)


# --------------------------------------------------------------------------------------------
# MIME trees and reports
# --------------------------------------------------------------------------------------------

_TRANSFER_ENCODINGS = ("7bit", "8bit", "quoted-printable", "base64", "x-uuencode", "BASE64", "")
_BODY_TEXTS = st.one_of(
    st.text(_ANY_CHAR, max_size=60),
    st.sampled_from(
        [
            "I am out of the office until 3 March 2027 with limited access to email.",
            "Ich bin bis zum 14.03. nicht im Büro.",
            "This is an automatic reply.",
            "Delivery to the following recipients failed: jo@customer.example",
            "On Mon, Jo wrote:\n> quoted\n",
            "-----Original Message-----\nFrom: a@b\n",
            "<html><body><p>Hello<br>there</p><script>x</script></body></html>",
        ]
    ),
)


def _encode_body(text: str, cte: str, charset: str) -> str:
    codec = charset.partition("*")[0] or "utf-8"
    try:
        raw = text.encode(codec)
    except (LookupError, UnicodeError, ValueError, TypeError):
        raw = text.encode("utf-8")
    if cte.lower() == "base64":
        return base64.encodebytes(raw).decode("ascii")
    if cte == "quoted-printable":
        return binascii.b2a_qp(raw).decode("ascii")
    return raw.decode("latin-1")


@st.composite
def _leaves(draw: st.DrawFn) -> str:
    ctype = draw(st.sampled_from(["text/plain", "text/html", "application/pdf", "TEXT/PLAIN", ""]))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(_TRANSFER_ENCODINGS))
    fields = []
    if ctype:
        fields.append(f'Content-Type: {ctype}; charset="{charset}"')
    if cte:
        fields.append(f"Content-Transfer-Encoding: {cte}")
    if draw(st.integers(0, 4)) == 0:
        fields.append("Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.pdf")
    body = _encode_body(draw(_BODY_TEXTS), cte, charset)
    if draw(st.integers(0, 6)) == 0:
        body = body[: len(body) // 2] + "=\n=Z!"  # broken transfer encoding
    return "\n".join(fields) + "\n\n" + body


@st.composite
def _multiparts(draw: st.DrawFn, children: st.SearchStrategy[str]) -> str:
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report", "digest"]))
    boundary = draw(st.sampled_from(["b", "=_b 1", "b1", '"quoted b"', "", "x" * 75]))
    parts = draw(st.lists(children, max_size=4))
    bare = boundary.strip('"')
    shape = draw(st.sampled_from(["good", "good", "no_close", "wrong_close", "no_param", "junk"]))
    header = f"Content-Type: multipart/{subtype}"
    if shape != "no_param":
        header += f"; boundary={boundary}"
    lines = [header, "", "preamble"]
    for part in parts:
        lines += [f"--{bare}", part]
    if shape == "good":
        lines += [f"--{bare}--", "epilogue"]
    elif shape == "wrong_close":
        lines += [f"--{bare}x--"]
    elif shape == "junk":
        lines += [f"--{bare}-- trailing", f"--{bare}"]
    return "\n".join(lines)


def _message_parts(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return children.map(lambda inner: "Content-Type: message/rfc822\n\nSubject: inner\n" + inner)


def mime_trees(max_leaves: int = 8) -> st.SearchStrategy[bytes]:
    """A whole message whose body is a MIME tree: nested multiparts with good and bad boundaries
    (missing close, wrong close, no boundary parameter, spaces, 75 characters), attached
    messages, leaves with broken charsets and transfer encodings.
    """
    trees = st.recursive(
        _leaves(),
        lambda children: st.one_of(_multiparts(children), _message_parts(children)),
        max_leaves=max_leaves,
    )
    return st.builds(_join_message, header_blocks(end=False), trees)


def _join_message(head: bytes, body: str) -> bytes:
    newline = b"\r\n" if head.endswith(b"\r\n") else b"\n"
    return head + body.replace("\n", newline.decode()).encode("utf-8", "surrogateescape")


_DSN_FIELDS = (
    "Final-Recipient",
    "Original-Recipient",
    "Action",
    "Status",
    "Diagnostic-Code",
    "Remote-MTA",
    "Last-Attempt-Date",
    "X-Actual-Recipient",
    "Will-Retry-Until",
)
_DSN_VALUES = {
    "Final-Recipient": ["rfc822; jo@customer.example", "rfc822;", "x400; c=us", "jo@", "<>"],
    "Original-Recipient": ["rfc822;jo@customer.example", "utf-8; jö@bücher.example", ""],
    "Action": ["failed", "delayed", "delivered", "relayed", "expanded", "FAILED (bad)", ""],
    "Status": ["5.1.1", "4.4.1", "5.0.0 (quota)", "2.0.0", "5.", "9.9.9", "550", ""],
    "Diagnostic-Code": [
        "smtp; 550 5.1.1 <jo@customer.example>: User unknown",
        "smtp;550-5.7.1 blocked\n 550 5.7.1 see http://x",
        "X-Postfix; mailbox full",
        "",
    ],
    "Remote-MTA": ["dns; mx.customer.example", ""],
}


@st.composite
def _recipient_blocks(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(_DSN_FIELDS), min_size=1, max_size=6))
    lines = []
    for name in names:
        value = draw(
            st.one_of(st.sampled_from(_DSN_VALUES.get(name, ["x"])), phrases, address_lists(1))
        )
        lines.append(f"{name}: {value}")
    if draw(st.integers(0, 4)) == 0:
        lines.insert(
            draw(st.integers(0, len(lines))), draw(st.sampled_from(["junk line", " folded", ":"]))
        )
    return "\n".join(lines)


@st.composite
def dsns(draw: st.DrawFn) -> bytes:
    """A delivery status notification (RFC 3464), often broken: per-recipient blocks with
    missing, repeated or nonsensical fields, blank lines missing between them, a report type
    on the wrong container, the returned message cut or absent, a bounce envelope or none.
    """
    envelope = draw(
        st.sampled_from(
            [
                "From: Mail Delivery System <MAILER-DAEMON@mx.example>",
                "From: <>",
                "From: postmaster@mx.example\nX-Failed-Recipients: jo@customer.example",
                "From: jo@customer.example",
            ]
        )
    )
    subject = draw(st.sampled_from(["Undelivered Mail Returned to Sender", "Re: hello", "Delay"]))
    report_type = draw(st.sampled_from(["delivery-status", "disposition-notification", "x", ""]))
    container = draw(st.sampled_from(["multipart/report", "multipart/mixed"]))
    blocks = draw(st.lists(_recipient_blocks(), max_size=4))
    separator = draw(st.sampled_from(["\n\n", "\n", "\n \n"]))
    status_part = "Reporting-MTA: dns; mx.example\nArrival-Date: today\n\n" + separator.join(
        blocks
    )
    returned = draw(
        st.sampled_from(
            [
                "Content-Type: message/rfc822\n\nMessage-ID: <send-1@mail.sales.example>\n"
                "From: rep@sales.example\nSubject: Quick question\n\nHi",
                "Content-Type: text/rfc822-headers\n\nMessage-ID: <send-1@mail.sales.example>\n",
                "Content-Type: message/rfc822\n\n",
                "",
            ]
        )
    )
    status_type = draw(
        st.sampled_from(
            ["message/delivery-status", "text/plain", "message/global-delivery-status"]
        )
    )
    body = [
        "--b",
        "Content-Type: text/plain",
        "",
        draw(_BODY_TEXTS),
        "--b",
        f"Content-Type: {status_type}",
        "",
        status_part,
    ]
    if returned:
        body += ["--b", returned]
    if draw(st.booleans()):
        body.append("--b--")
    head = (
        f"{envelope}\nTo: rep@sales.example\nSubject: {subject}\nMIME-Version: 1.0\n"
        f"Content-Type: {container}; report-type={report_type}; boundary=b\n"
    )
    text = head + "\n" + "\n".join(body) + "\n"
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return text.replace("\n", newline).encode("utf-8", "surrogateescape")


@st.composite
def _plain_messages(draw: st.DrawFn) -> bytes:
    head = draw(header_blocks(end=False))
    body = draw(_BODY_TEXTS)
    return _join_message(head, "\n" + body)


def messages() -> st.SearchStrategy[bytes]:
    """Any incoming message: a hostile header block with a text body, a MIME tree, or a DSN."""
    return st.one_of(_plain_messages(), mime_trees(), dsns())
