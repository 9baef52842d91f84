"""Unit tests for the lenient RFC 5322 header parser, one rule per test."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import pickle
from email.message import EmailMessage
from pathlib import Path

import pytest

from replytrack.errors import ParseError
from replytrack.headers import (
    KEEP_FIRST_IDS,
    MAX_HEADER_BYTES,
    MAX_ID_LENGTH,
    MAX_IDS_PER_FIELD,
    Address,
    decode_encoded_words,
    normalize_msg_id,
    normalize_subject,
    parse_address,
    parse_addresses,
    parse_headers,
    parse_msg_id,
    parse_msg_ids,
)

CORPUS = Path(__file__).parent.parent / "corpus"
APPLE_REPLY = CORPUS / "talon" / "standard_replies" / "apple_mail_2.eml"

SIMPLE = (
    "From: Jo Prospect <jo@customer.example>\n"
    "To: rep@sales.example\n"
    "Subject: Re: Pricing\n"
    "Message-ID: <reply-1@customer.example>\n"
    "In-Reply-To: <send-1@sales.example>\n"
    "\n"
    "From: not-a-header@body.example\n"
)


# -- the header block -------------------------------------------------------------------------


def test_real_client_reply_exposes_its_threading_headers() -> None:
    h = parse_headers(APPLE_REPLY.read_bytes())
    gmail_id = "CABzQGhkMXDxUt_tSVQcg=43aniUhtsVfCZVzu-PG0kwS_uzqMw@mail.gmail.com"
    assert h.message_id == "68001B29-8EA4-444C-A894-0537D2CA5208@tictail.com"
    assert h.in_reply_to == (gmail_id,)
    assert h.references == (gmail_id,)
    assert h.from_ == (Address("Adam Renberg", "adam@tictail.com"),)
    assert h.from_[0].name == "Adam Renberg"
    assert h.subject == "Re: Hello there"
    assert h.defects == ()


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings_lf_crlf_and_cr_alone_parse_alike(newline: str) -> None:
    h = parse_headers(SIMPLE.replace("\n", newline).encode())
    assert h.message_id == "reply-1@customer.example"
    assert h.subject == "Re: Pricing"
    assert h.from_ == (Address("Jo Prospect", "jo@customer.example"),)
    assert len(h) == 5


def test_reading_stops_at_the_empty_line() -> None:
    h = parse_headers(SIMPLE)
    assert h.get_all("from") == ("Jo Prospect <jo@customer.example>",)


def test_a_missing_empty_line_ends_the_block_at_the_first_non_field_line() -> None:
    h = parse_headers("Subject: hi\nMessage-ID: <a@b>\nHello, this is the body.\nTo: x@y\n")
    assert h.subject == "hi"
    assert "to" not in h
    assert any("no empty line" in d for d in h.defects)


def test_a_header_only_message_without_final_newline_keeps_its_last_field() -> None:
    h = parse_headers(b"Subject: hi\r\nMessage-ID: <last@example.com>")
    assert h.message_id == "last@example.com"
    assert h.defects == ()


def test_an_mbox_from_line_is_skipped() -> None:
    h = parse_headers("From MAILER-DAEMON Fri Jul  8 12:08:34 2011\nSubject: x\n\nbody")
    assert h.subject == "x"
    assert h.defects == ()


def test_a_utf8_byte_order_mark_is_ignored() -> None:
    h = parse_headers(b"\xef\xbb\xbfSubject: x\n\n")
    assert h.subject == "x"


def test_folded_fields_are_unfolded() -> None:
    h = parse_headers("Subject: a long\r\n\tsubject\r\n  folded twice\r\n\r\n")
    assert h.subject == "a long\tsubject  folded twice"


def test_raw_utf8_values_decode_as_utf8() -> None:
    h = parse_headers("Subject: Grüße aus Köln\nFrom: Jörg <j@x.example>\n\n".encode())
    assert h.subject == "Grüße aus Köln"
    assert h.from_[0].name == "Jörg"
    assert h.defects == ()


def test_a_latin1_line_falls_back_without_spoiling_utf8_lines() -> None:
    data = "Subject: Grüße\n".encode() + "From: Jörg <j@x.example>\n\n".encode("latin-1")
    h = parse_headers(data)
    assert h.subject == "Grüße"
    assert h.from_[0].name == "Jörg"
    assert any("latin-1" in d for d in h.defects)


def test_the_block_is_bounded() -> None:
    data = b"Subject: x\n" + b"X-Junk: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\n\nbody"
    h = parse_headers(data)
    assert h.subject == "x"
    assert "x-junk" not in h
    assert any("longer than" in d for d in h.defects)


def test_a_leading_continuation_line_is_ignored_with_a_defect() -> None:
    h = parse_headers(" stray\nSubject: x\n\n")
    assert h.subject == "x"
    assert any("continuation" in d for d in h.defects)


def test_get_is_case_insensitive_and_returns_the_first_occurrence() -> None:
    h = parse_headers("Received: one\nreceived: two\nX-Tag: =?utf-8?q?caf=C3=A9?=\n\n")
    assert h.get("RECEIVED") == "one"
    assert h.get_all("Received") == ("one", "two")
    assert h.get("x-tag") == "café"
    assert h.get("missing") is None
    assert h.get("missing", "dflt") == "dflt"
    assert "received" in h
    assert h.fields[0] == ("Received", "one")


def test_message_input_parses_like_bytes_for_both_stdlib_policies() -> None:
    data = APPLE_REPLY.read_bytes()
    expected = parse_headers(data)
    for policy in (email.policy.compat32, email.policy.default):
        h = parse_headers(email.message_from_bytes(data, policy=policy))
        assert h.message_id == expected.message_id
        assert h.references == expected.references
        assert h.from_ == expected.from_
        assert h.subject == expected.subject


def test_message_input_with_raw_8bit_headers_keeps_the_text() -> None:
    data = "Subject: Grüße\nFrom: Jörg <j@x.example>\n\nbody".encode()
    h = parse_headers(email.message_from_bytes(data))
    assert h.subject == "Grüße"
    assert h.from_[0].name == "Jörg"


def test_str_with_surrogate_escapes_gives_back_the_raw_bytes() -> None:
    text = "Subject: Gr\udcfc\udc9fe\n\n"  # "Grüße" in latin-1, decoded with surrogateescape
    assert parse_headers(text).subject is not None


def test_headers_values_compare_and_hash_by_their_fields() -> None:
    a, b = parse_headers(SIMPLE), parse_headers(SIMPLE.encode())
    assert a == b
    assert hash(a) == hash(b)
    assert a != parse_headers("Subject: other\n\n")
    assert "reply-1@customer.example" in repr(a)


def test_unexpected_input_types_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_headers(42)  # type: ignore[arg-type]


# -- message identifiers ----------------------------------------------------------------------


def test_ids_lose_brackets_and_keep_left_case_with_domain_lower_cased() -> None:
    assert parse_msg_ids("<AbC.123@Mail.Example.COM>") == ("AbC.123@mail.example.com",)


def test_references_keep_their_order_across_folds_and_commas() -> None:
    value = "<a@x.example>\r\n <b@x.example>,<c@x.example>\n\t<d@x.example>"
    assert parse_msg_ids(value) == ("a@x.example", "b@x.example", "c@x.example", "d@x.example")


def test_comments_and_quoted_phrases_around_ids_are_ignored() -> None:
    value = '<id1@x.example> (Lars\'s message of "Tue, 1 Jan 2002") "<no@pe>" <id2@x.example>'
    assert parse_msg_ids(value) == ("id1@x.example", "id2@x.example")


def test_cfws_inside_brackets_is_removed() -> None:
    assert parse_msg_ids("< id (comment) @ x.example >") == ("id@x.example",)


def test_semicolons_separate_ids_too() -> None:
    assert parse_msg_ids("<a@x>; <b@y>") == ("a@x", "b@y")


def test_ids_without_brackets_are_found() -> None:
    assert parse_msg_ids("a@x.example b@y.example") == ("a@x.example", "b@y.example")


def test_an_address_in_a_phrase_is_not_an_id_when_a_bracketed_id_exists() -> None:
    value = "Message from jo@customer.example of Mon, 1 Jan <real@x.example>"
    assert parse_msg_ids(value) == ("real@x.example",)


def test_an_id_with_two_at_signs_is_kept_with_its_last_domain_lower_cased() -> None:
    assert parse_msg_ids("<a@b@C.example>") == ("a@b@c.example",)


def test_an_id_with_a_domain_literal_is_kept() -> None:
    assert parse_msg_ids("<a1@[127.0.0.1]>") == ("a1@[127.0.0.1]",)


def test_an_unterminated_bracket_does_not_hide_the_ids_after_it() -> None:
    assert parse_msg_ids("<broken@x <good@y>") == ("broken@x", "good@y")


def test_a_bad_id_does_not_hide_the_ids_after_it() -> None:
    assert parse_msg_ids('<a@x> <"q" junk (c)> <b@y>')[-1] == "b@y"
    assert parse_msg_ids("<> <a@x>") == ("a@x",)


def test_an_overlong_id_is_dropped() -> None:
    long_id = "a" * MAX_ID_LENGTH + "@x.example"
    assert parse_msg_ids(f"<{long_id}> <ok@x.example>") == ("ok@x.example",)


def test_too_many_ids_keep_the_first_and_the_newest() -> None:
    ids = [f"id{i}@x.example" for i in range(MAX_IDS_PER_FIELD * 5)]
    kept = parse_msg_ids(" ".join(f"<{i}>" for i in ids))
    assert len(kept) == MAX_IDS_PER_FIELD
    assert kept[:KEEP_FIRST_IDS] == tuple(ids[:KEEP_FIRST_IDS])
    assert kept[-1] == ids[-1]
    assert kept[KEEP_FIRST_IDS] == ids[len(ids) - (MAX_IDS_PER_FIELD - KEEP_FIRST_IDS)]


def test_ids_that_pythons_email_package_rfc2047_encoded_are_found() -> None:
    """policy.default encodes In-Reply-To/References holding an id longer than a line."""
    long_id = "r1." + "a" * 90 + "@mail.sales.example"
    message = EmailMessage()
    message["In-Reply-To"] = f"<{long_id}>"
    message["References"] = f"<first@x.example> <{long_id}>"
    data = message.as_bytes()
    assert b"=?utf-8?q?" in data
    h = parse_headers(data)
    assert h.in_reply_to == (long_id,)
    assert h.references == ("first@x.example", long_id)
    assert any("encoded-word" in d for d in h.defects)


def test_message_id_is_the_first_id_of_the_field() -> None:
    h = parse_headers("Message-ID: <One@X.example> <two@x.example>\n\n")
    assert h.message_id == "One@x.example"


def test_an_id_field_without_an_id_is_a_defect() -> None:
    h = parse_headers("Message-ID: no id here\n\n")
    assert h.message_id is None
    assert h.defects == ("message-id: no message id found in 'no id here'",)


def test_missing_threading_fields_are_empty() -> None:
    h = parse_headers("Subject: x\n\n")
    assert h.message_id is None
    assert h.in_reply_to == ()
    assert h.references == ()


def test_strict_parse_msg_id_accepts_one_well_formed_id() -> None:
    assert parse_msg_id(" <Ab.c@X.example> ") == "Ab.c@x.example"
    assert parse_msg_id("ab@[10.0.0.1]") == "ab@[10.0.0.1]"


@pytest.mark.parametrize("bad", ["", "<>", "no-at", "<a b@x>", "<a@x> <b@y>", "a@", "<a(c)@x>"])
def test_strict_parse_msg_id_rejects_anything_else(bad: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_msg_id(bad)
    assert isinstance(info.value, ValueError)
    assert info.value.value == bad


def test_normalize_msg_id_returns_the_canonical_form_or_none() -> None:
    assert normalize_msg_id("<X@Y.example>") == "X@y.example"
    assert normalize_msg_id("X@Y.example") == "X@y.example"
    assert normalize_msg_id("  ") is None


# -- addresses --------------------------------------------------------------------------------


def test_display_names_quoted_and_plain() -> None:
    assert parse_addresses('"Ops, Revenue" <revops@x.example>, Rep  Person <rep@y.example>') == (
        Address("Ops, Revenue", "revops@x.example"),
        Address("Rep Person", "rep@y.example"),
    )
    assert [a.name for a in parse_addresses('"Ops, Revenue" <r@x>, Rep  Person <p@y>')] == [
        "Ops, Revenue",
        "Rep Person",
    ]


def test_encoded_display_names_are_decoded_also_inside_quotes() -> None:
    found = parse_addresses(
        '=?UTF-8?Q?Dana_M=C3=BCller?= <d@x.example>, "=?utf-8?B?SsO2cmc=?=" <j@x.example>'
    )
    assert [a.name for a in found] == ["Dana Müller", "Jörg"]


def test_escaped_quotes_in_display_names() -> None:
    assert parse_addresses(r'"Jo \"JJ\" Doe" <jo@x.example>')[0].name == 'Jo "JJ" Doe'


def test_groups_yield_their_members_and_empty_groups_nothing() -> None:
    value = "Team: a@x.example, B <b@x.example>;, undisclosed-recipients:;, c@y.example"
    assert [a.addr for a in parse_addresses(value)] == [
        "a@x.example",
        "b@x.example",
        "c@y.example",
    ]


def test_a_comment_after_a_bare_address_is_its_name() -> None:
    assert parse_addresses("jo@x.example (Jo Doe)") == (Address("Jo Doe", "jo@x.example"),)
    assert parse_addresses("jo@x.example (Jo Doe)")[0].name == "Jo Doe"


def test_the_null_path_and_domainless_mailboxes_are_kept() -> None:
    assert parse_addresses("<>") == (Address("", ""),)
    assert parse_addresses("MAILER-DAEMON (Mail Delivery System)")[0].addr == "MAILER-DAEMON"


def test_an_obsolete_route_is_dropped() -> None:
    assert parse_addresses("<@relay1.example,@relay2.example:jo@x.example>")[0].addr == (
        "jo@x.example"
    )


def test_a_quoted_local_part_keeps_its_quotes() -> None:
    assert parse_addresses('"jo doe"@x.example')[0].addr == '"jo doe"@x.example'
    assert parse_addresses('Jo <"jo doe"@x.example>')[0].addr == '"jo doe"@x.example'


def test_obsolete_spaces_around_dots_and_at_are_removed() -> None:
    assert parse_addresses("jo . doe @ x.example")[0].addr == "jo.doe@x.example"


def test_one_bad_address_never_loses_the_others() -> None:
    found = parse_addresses("a@x.example, Jo Smith, <b@x.example, c@y.example")
    assert [a.addr for a in found] == ["a@x.example", "b@x.example", "c@y.example"]


def test_a_stray_quote_does_not_swallow_the_rest_of_the_list() -> None:
    found = parse_addresses('"Jo <jo@x.example>, b@y.example')
    assert [a.addr for a in found] == ["jo@x.example", "b@y.example"]


def test_an_address_with_an_empty_part_is_dropped() -> None:
    assert parse_addresses("a@x.example, @, jo@, @x.example, <@>, b@y.example") == (
        Address("", "a@x.example"),
        Address("", "b@y.example"),
    )


def test_an_escaped_backslash_ends_a_quoted_name_in_the_slow_path() -> None:
    assert parse_addresses(r'(c) "a\\" <x@y.example>')[0].name == "a\\"


def test_a_name_without_brackets_before_the_address_is_understood() -> None:
    assert parse_addresses("Jo Smith jo@x.example") == (Address("Jo Smith", "jo@x.example"),)
    assert parse_addresses("Jo Smith jo@x.example")[0].name == "Jo Smith"


def test_addresses_compare_case_insensitively_with_idna_domains() -> None:
    assert Address("A", "Jo@Example.COM") == Address("B", "jo@example.com")
    assert Address("", "jo@bücher.example") == Address("", "jo@xn--bcher-kva.example")
    assert hash(Address("", "Jo@X.example")) == hash(Address("x", "jo@x.example"))
    assert Address("", "jo@x.example") != Address("", "bo@x.example")


def test_address_parts_and_str() -> None:
    a = Address("Jo, Doe", "Jo@X.Example")
    assert (a.local, a.domain) == ("Jo", "x.example")
    assert str(a) == '"Jo, Doe" <Jo@X.Example>'
    assert str(Address("", "jo@x")) == "jo@x"
    assert str(Address("Dana Müller", "d@x")) == "Dana Müller <d@x>"
    assert str(Address("", "")) == "<>"
    assert Address("", "MAILER-DAEMON").domain == ""


def test_address_is_immutable_and_picklable() -> None:
    a = Address("Jo", "jo@x.example")
    with pytest.raises(AttributeError):
        a.addr = "other@x.example"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a


def test_strict_parse_address() -> None:
    assert parse_address("Jo <jo@x.example>") == Address("Jo", "jo@x.example")
    for bad in ("", "a@x, b@y", "Jo Smith", "<>", "MAILER-DAEMON", "Jo <jo@x"):
        with pytest.raises(ParseError):
            parse_address(bad)


def test_header_address_fields() -> None:
    h = parse_headers(
        "From: A <a@x.example>\nSender: s@x.example\nReply-To: r@x.example\n"
        "To: t1@y.example, t2@y.example\nCc: c@z.example\n\n"
    )
    assert [a.addr for a in h.from_] == ["a@x.example"]
    assert [a.addr for a in h.sender] == ["s@x.example"]
    assert [a.addr for a in h.reply_to] == ["r@x.example"]
    assert [a.addr for a in h.to] == ["t1@y.example", "t2@y.example"]
    assert [a.addr for a in h.cc] == ["c@z.example"]


# -- RFC 2047 and subjects --------------------------------------------------------------------


def test_whitespace_between_adjacent_encoded_words_is_dropped() -> None:
    assert decode_encoded_words("=?utf-8?q?a?= \r\n =?utf-8?q?b?=") == "ab"
    assert decode_encoded_words("=?utf-8?q?a?= x =?utf-8?q?b?=") == "a x b"
    assert decode_encoded_words("Re: =?utf-8?q?caf=C3=A9?= now") == "Re: café now"


def test_a_character_split_across_two_words_survives() -> None:
    # "€" is E2 82 AC in UTF-8; the encoder cut it after the first byte.
    assert decode_encoded_words("=?utf-8?b?4g==?= =?utf-8?b?gqw=?=") == "€"
    assert decode_encoded_words("=?utf-8?q?=E2?= =?utf-8?q?=82=AC?=") == "€"


def test_q_underscore_is_a_space_and_charsets_differ_per_word() -> None:
    assert decode_encoded_words("=?iso-8859-1?q?caf=E9?= =?utf-8?q?_=C3=A9?=") == "café é"


def test_unknown_charsets_and_bad_base64_do_not_raise() -> None:
    h = parse_headers("Subject: =?x-bogus?q?caf=E9?= =?utf-8?b?w6k?= =?utf-8?b?!!!w6k=?=\n\n")
    assert h.subject == "cafééé"
    assert any("unknown charset" in d for d in h.defects)
    assert any("outside base64" in d for d in h.defects)


def test_missing_base64_padding_is_repaired() -> None:
    assert decode_encoded_words("=?utf-8?b?w6k?=") == "é"


def test_mislabelled_chinese_and_language_tags_decode() -> None:
    assert decode_encoded_words("=?gb2312?b?xOO6ww==?=") == "你好"
    assert decode_encoded_words("=?utf-8*en?q?hi?=") == "hi"


def test_decoded_line_breaks_cannot_inject_lines() -> None:
    assert decode_encoded_words("=?utf-8?q?a=0D=0ABcc:_x@y?=") == "a Bcc: x@y"


def test_subject_absent_is_none_and_empty_is_empty() -> None:
    assert parse_headers("To: a@b\n\n").subject is None
    assert parse_headers("Subject:\n\n").subject == ""


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Pricing", "Pricing"),
        ("RE: AW: [sales] Fwd: Re[2]:  Pricing  for Q1", "Pricing for Q1"),
        ("Re(3): Re^2: x", "x"),
        ("SV: VS: Antw: WG: RIF: R: I: TR: Enc: RES: RV: Odp: YNT: x", "x"),
        ("回复：转发: 답장: 返信: x", "x"),
        ("[EXTERNAL] Re: Demo next week", "Demo next week"),
        ("Demo (fwd)", "Demo"),
        ("Re: Re:Re:x", "x"),
        ("Rebate offer", "Rebate offer"),
        ("Re", "Re"),
        ("Fwd:", ""),
        ("Question: pricing", "Question: pricing"),
    ],
)
def test_normalize_subject(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected
    assert normalize_subject(normalize_subject(subject)) == normalize_subject(subject)


# -- dates ------------------------------------------------------------------------------------


def test_dates_are_aware() -> None:
    d = parse_headers("Date: Tue, 24 Nov 2026 17:13:52 +0100\n\n").date
    assert d == dt.datetime(2026, 11, 24, 16, 13, 52, tzinfo=dt.timezone.utc)
    assert d is not None
    assert d.utcoffset() == dt.timedelta(hours=1)


def test_obsolete_zone_names_are_understood() -> None:
    d = parse_headers("Date: Mon, 2 Apr 2012 09:57:58 EDT\n\n").date
    assert d is not None
    assert d.utcoffset() == dt.timedelta(hours=-4)


def test_minus_zero_zone_means_utc() -> None:
    d = parse_headers("Date: Mon, 2 Apr 2012 09:57:58 -0000\n\n").date
    assert d is not None
    assert d.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("value", ["yesterday", "Mon, 31 Feb 2012 09:57:58 +0000", "", "99 99"])
def test_unparsable_dates_are_none_with_a_defect(value: str) -> None:
    h = parse_headers(f"Date: {value}\n\n")
    assert h.date is None
    assert any(d.startswith("date:") for d in h.defects)


# -- defects ----------------------------------------------------------------------------------


def test_defects_name_the_field_they_come_from() -> None:
    h = parse_headers("Message-ID: <a@x (unterminated\nTo: Jo <jo@x.example\n\n")
    assert any(d.startswith("message-id:") for d in h.defects)
    assert any(d.startswith("to:") for d in h.defects)
    assert h.to[0].addr == "jo@x.example"


def test_well_formed_headers_have_no_defects() -> None:
    assert parse_headers(SIMPLE).defects == ()
