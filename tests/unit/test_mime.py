"""replytrack.mime: the fast reader gives the stdlib parser's body text, or hands back to it."""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import mailbox
import quopri
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from replytrack import mime, ooo
from replytrack.classify import MAX_PARSE_BYTES
from replytrack.testing import (
    OOO_LANGUAGES,
    build_auto_reply,
    build_out_of_office,
    build_reply,
)
from strategies import messages, mime_trees

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
NOT_MESSAGES = frozenset({"SOURCES.md", ".gitattributes"})


def _stdlib_body(data: bytes) -> str:
    """What `classify` read before replytrack.mime: compat32 parse, then `ooo.body_text`."""
    return ooo.body_text(email.message_from_bytes(data, policy=email.policy.compat32))


def _corpus() -> list[tuple[str, bytes]]:
    """Every message of the corpus, and every message inside its mbox files."""
    samples = []
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.name in NOT_MESSAGES:
            continue
        rel = path.relative_to(CORPUS).as_posix()
        samples.append((rel, path.read_bytes()[:MAX_PARSE_BYTES]))
        if path.suffix == ".mbox":
            box = mailbox.mbox(path, create=False)
            try:
                for n, key in enumerate(box.iterkeys()):
                    samples.append((f"{rel}#{n}", box.get_bytes(key)[:MAX_PARSE_BYTES]))
            finally:
                box.close()
    return samples


CORPUS_SAMPLES = _corpus()


# -- builder-generated variants ---------------------------------------------------------------


def _modern(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def _reencode(data: bytes, cte: str, *, charset: str = "utf-8") -> bytes:
    """Every text leaf re-encoded with `cte` and `charset` (utf-8 where `charset` can't)."""
    msg = _modern(data)
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        assert isinstance(part, email.message.EmailMessage)
        text = part.get_content()
        try:
            text.encode(charset)
            cs = charset
        except UnicodeEncodeError:
            cs = "utf-8"
        part.set_content(text, subtype=part.get_content_subtype(), charset=cs, cte=cte)
    return msg.as_bytes()


def _with_attachments(data: bytes) -> bytes:
    """multipart/mixed: the body, a PDF, an attached out-of-office, a text attachment."""
    msg = _modern(data)
    msg.make_mixed()
    msg.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="a.pdf")
    msg.add_attachment(_modern(build_out_of_office(language="de")))
    msg.add_attachment("attached words", filename="notes.txt")
    return msg.as_bytes()


def _attachment_first(data: bytes) -> bytes:
    """A text/plain attachment before the body: the body must still be the one chosen."""
    msg = _modern(data)
    msg.make_mixed()
    payload = msg.get_payload()
    assert isinstance(payload, list)
    msg.add_attachment("attached words", filename="notes.txt")
    payload.insert(0, payload.pop())
    return msg.as_bytes()


def _nested_related(data: bytes) -> bytes:
    """alternative(plain, related(html, image)), wrapped once more in mixed."""
    msg = _modern(data)
    html = msg.get_body(preferencelist=("html",))
    if html is None:
        text = msg.get_body(preferencelist=("plain",))
        assert text is not None
        msg.add_alternative(f"<html><body><p>{text.get_content()}</p></body></html>", "html")
        html = msg.get_body(preferencelist=("html",))
    assert isinstance(html, email.message.EmailMessage)
    html.add_related(b"\x89PNG...", maintype="image", subtype="png", cid="<logo>")
    msg.make_mixed()
    msg.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream")
    return msg.as_bytes()


def _html_only(data: bytes) -> bytes:
    """Only the text/html alternative, as some web mailers send."""
    msg = _modern(data)
    html = msg.get_body(preferencelist=("html",))
    assert isinstance(html, email.message.EmailMessage)
    markup = html.get_content()
    msg.clear_content()
    msg.set_content(markup, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {
    "as-built": lambda data: data,
    "lf": _lf,
    "quoted-printable": lambda data: _reencode(data, "quoted-printable"),
    "base64": lambda data: _reencode(data, "base64"),
    "latin-1-qp": lambda data: _reencode(data, "quoted-printable", charset="iso-8859-1"),
    "latin-1-8bit": lambda data: _reencode(data, "8bit", charset="iso-8859-1"),
    "8bit": lambda data: _reencode(data, "8bit"),
    "attachments": _with_attachments,
    "attachment-first": _attachment_first,
    "nested": _nested_related,
    "nested-base64": lambda data: _nested_related(_reencode(data, "base64")),
}


def _built() -> list[tuple[str, bytes]]:
    messages = [
        ("reply", build_reply()),
        ("reply-html", build_reply(html=True)),
        ("reply-no-quote", build_reply(quote=None, html=True)),
        ("reply-unicode", build_reply(body="Grüße, 見積もり — d'accord ✓\n\nJo", html=True)),
        ("auto-reply", build_auto_reply()),
    ]
    for language in OOO_LANGUAGES:
        messages.append((f"ooo-{language}", build_out_of_office(language=language)))
        messages.append(
            (f"ooo-{language}-bare", build_out_of_office(language=language, auto_submitted=False))
        )
    return messages


BUILT = _built()
VARIANTS = [(f"{name}/{t}", fn(data)) for name, data in BUILT for t, fn in TRANSFORMS.items()]
VARIANTS += [
    (f"{name}/html-only", _html_only(data)) for name, data in BUILT if b"text/html" in data
]


# -- equivalence --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "data"), CORPUS_SAMPLES, ids=[n for n, _ in CORPUS_SAMPLES])
def test_corpus_body_text_equals_the_stdlib_parse_or_is_left_to_it(name: str, data: bytes) -> None:
    """Every real message: the fast reader's text is the stdlib path's, or None (unsure)."""
    fast = mime.body_text(data)
    assert fast is None or fast == _stdlib_body(data)


def test_the_fast_reader_reads_most_of_the_corpus() -> None:
    """None is for malformed mail and envelope "From " lines, not the common case."""
    read = sum(mime.body_text(data) is not None for _, data in CORPUS_SAMPLES)
    assert read >= 0.7 * len(CORPUS_SAMPLES)


@pytest.mark.parametrize(("name", "data"), VARIANTS, ids=[n for n, _ in VARIANTS])
def test_built_messages_read_like_the_stdlib_parse(name: str, data: bytes) -> None:
    """Replies and out-of-office in every language, plain/html, QP/base64, nested: same text."""
    fast = mime.body_text(data)
    assert fast is not None
    assert fast == _stdlib_body(data)


@pytest.mark.parametrize(("name", "data"), BUILT, ids=[n for n, _ in BUILT])
def test_truncated_messages_read_like_the_stdlib_parse_or_are_left_to_it(
    name: str, data: bytes
) -> None:
    """A message cut anywhere (as MAX_PARSE_BYTES cuts it) reads like the stdlib's cut parse."""
    data = _nested_related(data)
    for cut in range(0, len(data), 7):
        fast = mime.body_text(data[:cut])
        assert fast is None or fast == _stdlib_body(data[:cut]), cut


# -- the rules ------------------------------------------------------------------------------


def test_a_bare_cr_is_left_to_the_stdlib() -> None:
    assert mime.skeleton(build_reply().replace(b"\r\n\r\n", b"\r\n\r", 1)) is None


def test_an_envelope_from_line_is_left_to_the_stdlib() -> None:
    assert (
        mime.skeleton(b"From jo@example.com Mon Mar  1 09:30:00 2027\n" + _lf(build_reply()))
        is None
    )


def test_a_multipart_without_boundary_is_left_to_the_stdlib() -> None:
    data = build_reply(html=True)
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.replace(b'; boundary="', b'; x="')
    assert mime.skeleton(head + b"\r\n\r\n" + body) is None


def test_too_many_parts_are_left_to_the_stdlib() -> None:
    msg = _modern(build_reply())
    msg.make_mixed()
    for n in range(mime.MAX_PARTS + 1):
        msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=f"{n}")
    assert mime.skeleton(msg.as_bytes()) is None


def test_the_skeleton_keeps_the_first_of_repeated_fields() -> None:
    """Message.get returns the first field of a name; so does the skeleton."""
    data = b"Content-Type: text/html\r\n" + build_reply()  # its own text/plain comes second
    root = mime.skeleton(data)
    assert root is not None
    assert root.get_content_type() == "text/html"
    assert mime.body_text(data) == _stdlib_body(data)


# -- never raises -----------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000))
def test_the_reader_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = mime.body_text(data)
    assert result is None or isinstance(result, str)


@FUZZ
@given(
    st.sampled_from([data for _, data in VARIANTS[:: max(1, len(VARIANTS) // 60)]]),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10_000),
            st.integers(min_value=0, max_value=8),
            st.sampled_from(
                [b"", b"\n", b"\r\n", b"--", b"-", b" ", b":", b"\t", b"\r", b"=", b"\xff"]
            ),
        ),
        max_size=6,
    ),
)
def test_mangled_messages_read_like_the_stdlib_parse_or_are_left_to_it(
    data: bytes, edits: list[tuple[int, int, bytes]]
) -> None:
    """Insertions and deletions near boundaries and fields never make the reader disagree."""
    for offset, delete, insert in edits:
        at = offset % (len(data) + 1)
        data = data[:at] + insert + data[at + delete :]
    try:
        expected = _stdlib_body(data)
    except Exception:  # the stdlib gave up: classify has no body then either way
        assume(False)  # raises: Hypothesis discards the example
    fast = mime.body_text(data)
    assert fast is None or fast == expected


# -- the plain path (Rule 6) --------------------------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _plain(data: bytes) -> str | None:
    """The plain path alone: its answer, or None where it leaves the message to the skeleton."""
    return mime._plain_body_text(data)


def _assert_plain_reads(data: bytes) -> str:
    """The plain path answers, with the stdlib's text, and body_text gives the same."""
    fast = _plain(data)
    assert fast is not None
    assert fast == _stdlib_body(data)
    assert mime.body_text(data) == fast
    return fast


def _assert_left_to_the_skeleton(data: bytes) -> None:
    """The plain path abstains; body_text still answers through the skeleton, correctly."""
    assert _plain(data) is None
    assert mime.skeleton(data) is not None
    assert mime.body_text(data) == _stdlib_body(data)


def _single(
    content_type: bytes | None,
    body: bytes,
    *,
    cte: bytes | None = None,
    disposition: bytes | None = None,
    newline: bytes = b"\r\n",
) -> bytes:
    fields = [b"From: Jo <jo@customer.example>", b"Subject: Re: hello", b"MIME-Version: 1.0"]
    if content_type is not None:
        fields.append(b"Content-Type: " + content_type)
    if cte is not None:
        fields.append(b"Content-Transfer-Encoding: " + cte)
    if disposition is not None:
        fields.append(b"Content-Disposition: " + disposition)
    return newline.join([*fields, b"", body])


_QP_BODY = b"Gr=C3=BC=C3=9Fe, soft=\r\nbreak and =3D sign\r\n"
_B64_BODY = base64.encodebytes("Grüße aus Köln\n".encode()).replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    ("cte", "body", "expected"),
    [
        (b"quoted-printable", _QP_BODY, "Grüße, softbreak and = sign\r\n"),
        (b"Quoted-Printable", _QP_BODY, "Grüße, softbreak and = sign\r\n"),
        (b"base64", _B64_BODY, "Grüße aus Köln\n"),
        (b"BASE64", _B64_BODY, "Grüße aus Köln\n"),
        (b"7bit", b"plain words\r\n", "plain words\r\n"),
        (b"8bit", "Grüße\r\n".encode(), "Grüße\r\n"),
        (b"binary", "Grüße\r\n".encode(), "Grüße\r\n"),
        (None, "Grüße\r\n".encode(), "Grüße\r\n"),
        # Not stripped by get_payload: "base64 " is no transfer encoding it knows.
        (b"base64 ", _B64_BODY, _B64_BODY.decode()),
        (b"x-unknown", _QP_BODY, _QP_BODY.decode()),
        (b"", _QP_BODY, _QP_BODY.decode()),
        # Broken input: whatever the stdlib makes of it.
        (b"quoted-printable", b"=E2=82 broken =ZZ sequence=\r\n", None),
        (b"base64", b"R3L8w59lIQ\r\n", None),  # padding missing
        (b"base64", b"R3L8w5!9lIQ==\r\n", None),  # a stray character
        (b"base64", b"!!not base64 at all!", None),
        (b"base64", b"QUJDR", None),  # one more than a multiple of 4: left as it is
    ],
)
def test_the_plain_path_decodes_each_transfer_encoding_like_get_payload(
    cte: bytes | None, body: bytes, expected: str | None
) -> None:
    text = _assert_plain_reads(_single(b'text/plain; charset="utf-8"', body, cte=cte))
    if expected is not None:
        assert text == expected


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        b"text/plain",
        b"TEXT/Plain",
        b"text/plain; charset=utf-8",
        b'text/plain; charset="utf-8"',
        b"text/plain;charset=UTF-8",
        b'text/plain ;  CharSet = "utf-8" ',
        b'text/plain;\r\n\tcharset="iso-8859-1"',
        b"text/plain; charset=utf-8; format=flowed; delsp=yes",
        b"text/plain; format=flowed; charset=latin-1",
        b'text/plain; charset="windows-1252"; charset=utf-8',  # the first one counts
        b'text/plain; charset=""',
        b'text/plain; charset=" utf-8 "',
        b"text/plain; charset=base64",  # not a text codec: ooo falls back to UTF-8
        b"text/plain; charset=unknown-8bit",
        b"text/plain; charset=x-no-such-codec",
        b"text/plain; charset=utf-16",
        b"text/plain; name=notes.txt",
    ],
)
def test_the_plain_path_reads_the_charset_like_get_content_charset(
    content_type: bytes | None,
) -> None:
    for body in ("Grüße, Zoë — 5 €\r\n".encode(), "Grüße\r\n".encode("latin-1")):
        _assert_plain_reads(_single(content_type, body, cte=b"8bit"))
        _assert_plain_reads(_single(content_type, body, cte=b"8bit", newline=b"\n"))


def test_the_plain_path_reads_html_through_the_ooo_stripper() -> None:
    text = _assert_plain_reads(
        _single(b"text/html; charset=utf-8", b"<p>Hello&amp;bye</p><blockquote>old</blockquote>")
    )
    assert "Hello&bye" in text
    assert "old" not in text


def test_the_plain_path_skips_attachments() -> None:
    assert _assert_plain_reads(_single(b"text/plain", b"x", disposition=b"attachment")) == ""
    assert _assert_plain_reads(_single(b"text/plain", b"x", disposition=b"inline")) == "x"
    assert _assert_plain_reads(_single(b"text/plain", b"x", disposition=b"ATTACHMENT; a=b")) == ""


def test_the_plain_path_reads_the_first_of_repeated_fields() -> None:
    data = b"Content-Type: text/html\r\nContent-Transfer-Encoding: 7bit\r\n" + build_reply()
    assert _assert_plain_reads(data) != ""
    data = b"Content-Transfer-Encoding: base64\r\n" + _single(b"text/plain", b"aGk=", cte=b"7bit")
    assert _assert_plain_reads(data) == "hi"


@pytest.mark.parametrize("name", ["reply", "reply-html", "reply-unicode", "ooo-de"])
def test_the_plain_path_reads_multiparts(name: str) -> None:
    """alternative(plain, html), mixed with attachments first, nested related: all plain."""
    data = dict(BUILT)[name]
    for transform in ("as-built", "lf", "base64", "attachments", "attachment-first", "nested"):
        _assert_plain_reads(TRANSFORMS[transform](data))


@pytest.mark.parametrize(
    ("content_type", "cte"),
    [
        (b"text/plain; charset*=utf-8''%C3%BC", b"8bit"),  # RFC 2231
        (b"text/plain; charset*0=utf; charset*1=-8", b"8bit"),
        (b"text/plain; charset=utf-8 (a comment)", b"8bit"),
        (b'text/plain; charset="utf\\-8"', b"8bit"),  # a quoted pair
        (b'text/plain; charset="utf;8"', b"8bit"),
        (b"text/plain; charset=<utf-8>", b"8bit"),  # unquote drops <>
        (b"text/plain; charset=utf-8;", b"8bit"),  # an empty parameter
        (b"text/plain; flowed", b"8bit"),  # a bare attribute
        (b"text/plain; charset=\xc3\xbc", b"8bit"),  # non-ASCII: a Header
        (b"text", b"8bit"),  # no subtype: text/plain, but not plain
        (b"text/plain; charset=utf-8", b"x-uuencode"),
        (b"text/plain; charset=utf-8", b"b\xc3\xa4se64"),
        (b"text/plain; x=" + b"y" * mime.MAX_PARAMS_CHARS, b"8bit"),  # Rule 5 would cut it
    ],
)
def test_values_that_are_not_plain_are_left_to_the_skeleton(
    content_type: bytes, cte: bytes
) -> None:
    _assert_left_to_the_skeleton(
        _single(content_type, b"begin 644 x\r\n#0V%T\r\n`\r\nend\r\n", cte=cte)
    )


@pytest.mark.parametrize("charset", ["undefined", "idna", "UNDEFINED", "base64", "no-such"])
def test_get_payload_raising_on_any_leaf_it_reaches_empties_the_body(charset: str) -> None:
    """ooo._text_parts calls get_payload(), which decodes 8-bit data by the charset parameter
    and lets errors other than LookupError out: ooo.body_text then gives "" - for the text
    part, and for any leaf before it, which the skeleton once read as an empty payload.
    """
    part = f"Content-Type: application/octet-stream; charset={charset}".encode()
    data = (
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
        + part
        + b"\n\n\xc3\xbc\n--b\nContent-Type: text/plain\n\nhello\n--b--\n"
    )
    _assert_plain_reads(data)
    assert mime.body_text(data) == _stdlib_body(data)
    skeleton = mime.skeleton(data)
    assert skeleton is not None
    assert ooo.body_text(skeleton) == _stdlib_body(data)
    text = _single(f"text/plain; charset={charset}".encode(), b"\xc3\xbc", cte=b"8bit")
    _assert_plain_reads(text)
    assert _stdlib_body(data) == ("hello" if charset in ("base64", "no-such") else "")


def test_a_non_ascii_disposition_is_left_to_the_skeleton() -> None:
    _assert_left_to_the_skeleton(
        _single(b"text/plain", b"x", disposition=b"attachment; filename=\xc3\xbc.txt")
    )


def test_a_multipart_with_a_boundary_that_is_not_plain_is_left_to_the_skeleton() -> None:
    data = build_reply(html=True)
    head, _, body = data.partition(b"\r\n\r\n")
    _assert_plain_reads(data)
    _assert_left_to_the_skeleton(
        head.replace(b'; boundary="', b'; boundary*="') + b"\r\n\r\n" + body
    )


def test_more_parts_than_ooo_visits_are_left_to_the_skeleton() -> None:
    msg = _modern(build_reply())
    msg.make_mixed()
    for n in range(ooo._MAX_PARTS):
        msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=f"{n}")
    _assert_left_to_the_skeleton(msg.as_bytes())


def test_malformed_structure_is_left_to_the_stdlib_by_both_paths() -> None:
    data = b"From jo@example.com Mon Mar  1 09:30:00 2027\n" + _lf(build_reply())
    assert _plain(data) is None
    assert mime.body_text(data) is None


@pytest.mark.parametrize(("name", "data"), CORPUS_SAMPLES, ids=[n for n, _ in CORPUS_SAMPLES])
def test_corpus_plain_path_equals_the_stdlib_parse_or_is_left_to_the_skeleton(
    name: str, data: bytes
) -> None:
    fast = _plain(data)
    assert fast is None or fast == _stdlib_body(data)


def test_the_plain_path_reads_most_of_what_the_skeleton_reads() -> None:
    skeleton_read = [data for _, data in CORPUS_SAMPLES if mime.skeleton(data) is not None]
    plain_read = sum(_plain(data) is not None for data in skeleton_read)
    assert plain_read >= 0.6 * len(skeleton_read)
    assert all(_plain(data) is not None for _, data in VARIANTS)


# A generator of exactly the shapes the plain path is for (plus what it must get right about
# them): text/plain or text/html, alone or first in a multipart/alternative, every spelling of
# the charset parameter and transfer encoding, real and bogus charsets, CRLF or LF, payloads
# with soft breaks, broken escapes, invalid base64 and raw 8-bit bytes.
_CHARSETS = [
    "utf-8",
    "UTF-8",
    "us-ascii",
    "latin-1",
    "iso-8859-1",
    "ISO-8859-15",
    "windows-1252",
    "cp1252",
    "koi8-r",
    "shift_jis",
    "utf-16",
    "unknown-8bit",
    "base64",
    "hex",
    "rot13",
    "undefined",
    "idna",
    "x-unknown",
    "8bit",
    "",
]
_CTES = [
    None,
    "quoted-printable",
    "Quoted-Printable",
    "QUOTED-printable",
    " quoted-printable",
    "quoted-printable ",
    "base64",
    "Base64",
    "base64 ",
    "base64\t",
    "7bit",
    "8bit",
    "8BIT",
    "binary",
    "x-token",
    "",
]
_PAYLOAD_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def _payloads(draw: st.DrawFn) -> bytes:
    """Body lines, joined with LF: encoded text, or raw bytes full of '=' and base64 letters."""
    text = draw(st.text(max_size=200))
    kind = draw(st.sampled_from(["qp", "b64", "raw", "latin-1"]))
    if kind == "qp":
        raw = quopri.encodestring(text.encode("utf-8", "surrogatepass"))
    elif kind == "b64":
        raw = base64.encodebytes(text.encode("utf-8", "surrogatepass"))
    elif kind == "latin-1":
        raw = text.encode("latin-1", "replace")
    else:
        pieces = st.one_of(
            _PAYLOAD_BYTES,
            st.sampled_from([b"=", b"=\n", b"=4", b"=C3=BC", b"=ZZ", b"==", b"QUJD", b"\xff\xfe"]),
        )
        raw = b"".join(draw(st.lists(pieces, max_size=12)))
    # Mangle a little: cut, or insert a stray byte.
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"", b"!", b"=", b"\xc3", b" \n"])) + raw[at:]
    return raw.replace(b"\r", b"")


@st.composite
def plain_shaped_messages(draw: st.DrawFn) -> bytes:
    """A message the plain path must read (Rule 6), in every spelling it accepts."""
    newline = draw(st.sampled_from([b"\r\n", b"\n"]))
    subtype = draw(st.sampled_from(["plain", "plain", "html", "Plain", "HTML"]))
    charset = draw(st.none() | st.sampled_from(_CHARSETS))
    quote = draw(st.sampled_from(['"', ""])) if charset else '"'
    params = "" if charset is None else f"; charset={quote}{charset}{quote}"
    if draw(st.booleans()):
        params += draw(st.sampled_from(["; format=flowed", ";\n\tdelsp=yes", '; name="a b.txt"']))
    content_type = draw(st.sampled_from(["text", "Text", "TEXT"])) + "/" + subtype + params
    cte = draw(st.sampled_from(_CTES))
    name = draw(st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE"]))
    leaf = [f"{name}: {content_type}"] if subtype != "plain" or draw(st.booleans()) else []
    if cte is not None:
        leaf.append(f"Content-Transfer-Encoding: {cte}")
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        leaf.append("Content-Disposition: " + draw(st.sampled_from(["inline", "attachment"])))
    payload = draw(_payloads())
    root = ["From: Jo <jo@customer.example>", "Subject: Re: hello", "MIME-Version: 1.0"]
    if draw(st.booleans()):
        lines = [*root, *leaf, "", *payload.decode("latin-1").split("\n")]
    else:
        boundary = "=_b0und.ary"
        first: list[str] = []
        if draw(st.booleans()):
            # A leaf before: ooo._text_parts reads its payload too, 8-bit data by its charset.
            other = draw(st.sampled_from([*_CHARSETS, None]))
            params = "" if other is None else f"; charset={other}"
            attached = draw(_payloads())
            assume(f"--{boundary}".encode() not in attached)
            first = [
                f"--{boundary}",
                f"Content-Type: {draw(st.sampled_from(['application/pdf', 'image/png']))}{params}",
                "",
                *attached.decode("latin-1").split("\n"),
            ]
        assume(f"--{boundary}".encode() not in payload)
        lines = [
            *root,
            f"Content-Type: multipart/{draw(st.sampled_from(['alternative', 'mixed']))};"
            f' boundary="{boundary}"',
            "",
            "preamble",
            *first,
            f"--{boundary}",
            *leaf,
            "",
            *payload.decode("latin-1").split("\n"),
            f"--{boundary}",
            "Content-Type: text/html; charset=utf-8",
            "",
            "<p>the html alternative</p>",
            f"--{boundary}--",
            "",
        ]
    return newline.join(line.encode("latin-1") for line in lines)


@PROPERTY
@given(plain_shaped_messages())
def test_plain_shaped_messages_are_read_by_the_plain_path_like_the_stdlib(data: bytes) -> None:
    _assert_plain_reads(data)


@PROPERTY
@given(st.one_of(mime_trees(), messages()))
def test_the_plain_path_equals_the_stdlib_parse_or_abstains(data: bytes) -> None:
    data = data[:MAX_PARSE_BYTES]
    try:
        expected = _stdlib_body(data)
    except Exception:  # the stdlib gave up
        assume(False)  # raises: Hypothesis discards the example
    assert _plain(data) in (None, expected)
    assert mime.body_text(data) in (None, expected)
