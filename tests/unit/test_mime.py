"""replytrack.mime: the fast reader gives the stdlib parser's body text, or hands back to it."""

from __future__ import annotations

import email
import email.message
import email.policy
import mailbox
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
        assume(False)
        return
    fast = mime.body_text(data)
    assert fast is None or fast == expected
