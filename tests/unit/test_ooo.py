"""Out-of-office and auto-reply detection: evidence, precision, and return dates."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage

import pytest

from replytrack.classify import Kind, classify
from replytrack.headers import parse_headers
from replytrack.ooo import LANGUAGES, body_text, detect_auto_reply, find_return_date
from replytrack.testing import (
    OOO_LANGUAGES,
    build_auto_reply,
    build_out_of_office,
    build_reply,
)

UTC = dt.timezone.utc
SENT = dt.datetime(2027, 3, 1, 9, 30, tzinfo=UTC)  # a Monday
DECEMBER = dt.datetime(2027, 12, 20, 9, 30, tzinfo=UTC)
STYLES = ("automatic_reply", "absence", "original")


def test_every_required_language_has_a_phrasebook_and_a_builder() -> None:
    required = {"en", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "ja", "zh"}
    assert required <= set(LANGUAGES)
    assert required <= set(OOO_LANGUAGES)


# -- out-of-office in every language ----------------------------------------------------------


@pytest.mark.parametrize("language", OOO_LANGUAGES)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("auto_submitted", [True, False], ids=["headers", "no-headers"])
def test_out_of_office_without_a_date_is_recognised(
    language: str, style: str, auto_submitted: bool
) -> None:
    c = classify(
        build_out_of_office(
            language=language,
            subject_style=style,  # type: ignore[arg-type]
            auto_submitted=auto_submitted,
        )
    )
    assert c.kind is Kind.OUT_OF_OFFICE
    assert c.return_date is None
    assert c.reasons


@pytest.mark.parametrize("language", OOO_LANGUAGES)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("auto_submitted", [True, False], ids=["headers", "no-headers"])
def test_out_of_office_return_date_is_read_in_every_language(
    language: str, style: str, auto_submitted: bool
) -> None:
    back = dt.date(2027, 3, 15)
    c = classify(
        build_out_of_office(
            language=language,
            return_date=back,
            subject_style=style,  # type: ignore[arg-type]
            auto_submitted=auto_submitted,
            date=SENT,
        )
    )
    assert c.kind is Kind.OUT_OF_OFFICE
    assert c.return_date == back
    assert f"return date {back.isoformat()}" in c.reasons


@pytest.mark.parametrize("language", OOO_LANGUAGES)
def test_return_date_without_a_year_rolls_over_into_next_year(language: str) -> None:
    c = classify(
        build_out_of_office(language=language, return_date=dt.date(2028, 1, 4), date=DECEMBER)
    )
    assert c.return_date == dt.date(2028, 1, 4)


# -- return dates -----------------------------------------------------------------------------

RETURN_DATES = [
    # (text, expected), resolved against Monday 1 March 2027
    ("I will be back on Monday 3 March.", dt.date(2027, 3, 3)),  # the date wins over the weekday
    ("I am out of the office until 14/03.", dt.date(2027, 3, 14)),
    ("Ich bin zurück am 03.03.2027.", dt.date(2027, 3, 3)),
    ("Je serai de retour le 3 mars.", dt.date(2027, 3, 3)),
    ("Sono in ferie, rientro il 3 marzo.", dt.date(2027, 3, 3)),
    ("Ik ben terug op 3 maart.", dt.date(2027, 3, 3)),
    ("I'll be back on March 14th.", dt.date(2027, 3, 14)),
    ("Back in the office on Thursday.", dt.date(2027, 3, 4)),
    ("I return on Monday.", dt.date(2027, 3, 8)),  # strictly after the Monday it was sent
    ("I am away through March 5.", dt.date(2027, 3, 6)),  # inclusive: back the day after
    ("Ich bin bis einschließlich 14.03. nicht im Büro.", dt.date(2027, 3, 15)),
    ("Ich bin vom 01.03. bis 14.03. im Urlaub.", dt.date(2027, 3, 14)),
    ("Ab dem 15.03. bin ich wieder im Büro.", dt.date(2027, 3, 15)),
    ("I am on leave from 3 to 14 March.", dt.date(2027, 3, 14)),
    ("Estoy de vacaciones hasta el 10 de marzo.", dt.date(2027, 3, 10)),
    ("Estarei de volta no dia 10 de março.", dt.date(2027, 3, 10)),
    ("Jag är tillbaka den 10 mars.", dt.date(2027, 3, 10)),
    ("Jeg er tilbage den 10. marts.", dt.date(2027, 3, 10)),
    ("Olen lomalla 14.3. asti.", dt.date(2027, 3, 14)),
    ("Jestem na urlopie do 14.03.2027.", dt.date(2027, 3, 14)),
    ("3月14日(月)より出社いたします。", dt.date(2027, 3, 14)),
    ("我将于2027年3月14日返回办公室。", dt.date(2027, 3, 14)),
    ("Back on 2027-03-09.", dt.date(2027, 3, 9)),
    ("I'm out until 14 March, back on 15 March.", dt.date(2027, 3, 15)),  # "back" beats "until"
    ("Back tomorrow.", dt.date(2027, 3, 2)),
]


@pytest.mark.parametrize(("text", "expected"), RETURN_DATES)
def test_return_date_phrasing(text: str, expected: dt.date) -> None:
    assert find_return_date(text, reference=SENT.date()) == expected


NO_RETURN_DATE = [
    "I am out of the office with limited access to email.",
    "I'll get back to you on Monday.",  # "you" is not a filler: not a return
    "Ich bin heute bis 9.30 Uhr im Termin.",  # a time of day, not a date
    "I am out of the office from 3 March.",  # leaving, not coming back
    "Version 2.1 is out until further notice.",
]


@pytest.mark.parametrize("text", NO_RETURN_DATE)
def test_no_return_date_when_none_is_stated(text: str) -> None:
    assert find_return_date(text, reference=SENT.date()) is None


def test_a_date_without_year_needs_a_reference() -> None:
    assert find_return_date("Back on 3 March.") is None
    assert find_return_date("Back on 3 March 2027.") == dt.date(2027, 3, 3)


def test_us_english_numeric_date_is_month_first_when_unambiguous() -> None:
    assert find_return_date("Back on 3/14.", reference=SENT.date(), languages=("en",)) == (
        dt.date(2027, 3, 14)
    )


def test_ambiguous_english_numeric_date_follows_the_sending_time_zone() -> None:
    eastern = dt.timedelta(hours=-5)
    london = dt.timedelta(0)
    ref = SENT.date()
    assert find_return_date("Back 3/4.", reference=ref, languages=("en",), utc_offset=eastern) == (
        dt.date(2027, 3, 4)
    )
    assert find_return_date("Back 3/4.", reference=ref, languages=("en",), utc_offset=london) == (
        dt.date(2027, 4, 3)
    )


def test_ambiguous_numeric_date_is_day_first_in_european_languages() -> None:
    assert find_return_date("De retour le 3/4.", reference=SENT.date(), languages=("fr",)) == (
        dt.date(2027, 4, 3)
    )


def test_weekday_decides_the_year_of_a_date_without_one() -> None:
    # 4 January 2028 is a Tuesday; sent in December 2027.
    ref = DECEMBER.date()
    assert find_return_date("Back on Tuesday 4 January.", reference=ref) == dt.date(2028, 1, 4)


def test_quoted_original_dates_are_not_return_dates() -> None:
    message = build_out_of_office(
        body=(
            "I am currently out of the office.\n\nOn Mon, 1 Mar 2027, Rep wrote:\n"
            "> Shall we meet? I am back on 20 March."
        ),
        date=SENT,
    )
    c = classify(message)
    assert c.kind is Kind.OUT_OF_OFFICE
    assert c.return_date is None


# -- header evidence (RFC 3834 and vendors) ---------------------------------------------------

NEUTRAL_BODY = "Thank you for your message."

STRONG_HEADERS = [
    {"Auto-Submitted": "auto-replied"},
    {"Auto-Submitted": "auto-generated"},
    {"Auto-Submitted": "auto-notified"},
    {"X-Autoreply": "yes"},
    {"X-Autorespond": "Thanks for your mail"},
    {"X-Autogenerated": "Reply"},
    {"Precedence": "auto_reply"},
    {"X-Precedence": "auto_reply"},
    {"Return-Path": "<>"},
    {"Delivered-To": "Autoresponder"},
    {"X-POST-MessageClass": "9; Autoresponder"},
]


@pytest.mark.parametrize("fields", STRONG_HEADERS, ids=lambda f: next(iter(f)))
def test_strong_header_evidence_decides_alone(fields: dict[str, str]) -> None:
    message = build_reply(body=NEUTRAL_BODY, quote=None, headers=fields)
    c = classify(message)
    assert c.kind is Kind.AUTO_REPLY
    name = next(iter(fields))
    assert any(name in reason for reason in c.reasons)


NOT_EVIDENCE = [
    {"X-Auto-Response-Suppress": "All"},
    {"Precedence": "list", "List-Id": "<sales.lists.example>"},
    {"Precedence": "bulk", "List-Id": "<sales.lists.example>"},
    {"List-Id": "Sales <sales.lists.example>"},
    {"Precedence": "bulk"},
    {"Precedence": "junk"},
    {"Auto-Submitted": "no"},
    {"Auto-Submitted": ""},
    {"X-Autoreply": "no"},
    {"X-MS-Exchange-Inbox-Rules-Loop": "jo@customer.example"},
    {"X-Autogenerated": "Forward"},
    {"Return-Path": "<jo@customer.example>"},
]


@pytest.mark.parametrize("fields", NOT_EVIDENCE, ids=",".join)
def test_headers_that_are_not_evidence_alone_leave_a_reply(fields: dict[str, str]) -> None:
    body = "Sounds good. I'll be out of office next week, let's talk after.\n\nJo"
    assert classify(build_reply(body=body, headers=fields)).kind is Kind.REPLY


@pytest.mark.parametrize(
    "fields",
    [
        {"X-MS-Exchange-Inbox-Rules-Loop": "jo@customer.example"},
        {"Precedence": "bulk"},
        {"X-Autogenerated": "Forward"},
    ],
    ids=lambda f: next(iter(f)),
)
def test_weak_header_evidence_counts_with_an_absence_statement(fields: dict[str, str]) -> None:
    body = "I am currently out of the office and back on 8 March."
    c = classify(build_reply(subject="Re: Quick question", body=body, quote=None, headers=fields))
    assert c.kind is Kind.OUT_OF_OFFICE
    assert c.return_date == dt.date(2027, 3, 8)


def test_weak_header_with_a_quoted_human_reply_stays_a_reply() -> None:
    """A human reply that an Exchange inbox rule redirected carries the loop header."""
    message = build_reply(headers={"X-MS-Exchange-Inbox-Rules-Loop": "rep@sales.example"})
    assert classify(message).kind is Kind.REPLY


def test_no_reply_sender_with_acknowledgement_wording_is_an_auto_reply() -> None:
    message = build_auto_reply(
        style="acknowledgement",
        subject="Re: Quick question",
        auto_submitted=False,
        from_="Customer <no-reply@customer.example>",
    )
    c = classify(message)
    assert c.kind is Kind.AUTO_REPLY
    assert any("no-reply" in reason for reason in c.reasons)


@pytest.mark.parametrize(
    "value",
    ["auto-replied (zimbra; vacation)", "auto-replied (vacation)"],
    ids=["zimbra", "sieve"],
)
def test_vacation_marker_in_auto_submitted_makes_an_out_of_office(value: str) -> None:
    message = build_reply(body="Noted.", quote=None, headers={"Auto-Submitted": value})
    c = classify(message)
    assert c.kind is Kind.OUT_OF_OFFICE
    assert any("vacation" in reason for reason in c.reasons)


# -- subjects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Quick question",
        "AUTOMATIC REPLY: Quick question",
        "[EXTERNAL] Automatic reply: Quick question",
        "Automatische Antwort: Quick question",
        "Abwesenheitsnotiz: Quick question",
        "Réponse automatique : Quick question",
        "Respuesta automática: Quick question",
        "Risposta automatica: Quick question",
        "Resposta automática: Quick question",
        "Automatisch antwoord: Quick question",
        "Automatiskt svar: Quick question",
        "Autosvar: Quick question",
        "Automaattinen vastaus: Quick question",
        "Odpowiedź automatyczna: Quick question",
        "自動応答: Quick question",
        "自动回复: Quick question",
        "Out of Office AutoReply: Quick question",
        "=?utf-8?q?R=C3=A9ponse_automatique_:_Quick_question?=",
    ],
)
def test_machine_subject_prefix_decides_alone(subject: str) -> None:
    message = build_reply(subject=subject, body=NEUTRAL_BODY, quote=None, in_reply_to=None)
    assert classify(message).kind in (Kind.AUTO_REPLY, Kind.OUT_OF_OFFICE)


def test_lotus_notes_subject_with_return_date() -> None:
    subject = "AUTO: Jo Prospect is out of the office (returning 14.03.2027)"
    c = classify(build_reply(subject=subject, body=NEUTRAL_BODY, quote=None, date=SENT))
    assert c.kind is Kind.OUT_OF_OFFICE
    assert c.return_date == dt.date(2027, 3, 14)


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Automatic reply: Quick question",  # a person answering an auto-reply
        "RE: Out of Office: Quick question",
        "Fwd: Automatic reply: Quick question",
        "Quick question about automatic reply tools",
        "Out of office software demo?",
    ],
)
def test_marker_after_reply_prefix_or_inside_a_subject_is_no_evidence(subject: str) -> None:
    message = build_reply(subject=subject, body="Yes, please send it over.\n\nJo")
    assert classify(message).kind is Kind.REPLY


def test_absence_subject_needs_the_message_to_answer_another() -> None:
    """People announce their holidays in new mail to colleagues under such subjects."""
    body = "I will be out of the office from 3/5 to 3/9. Please contact Jane meanwhile."
    announcement = build_reply(subject="Out of Office", body=body, quote=None, in_reply_to=None)
    assert classify(announcement).kind is Kind.REPLY
    answer = build_out_of_office(subject_style="absence", auto_submitted=False, body=body)
    assert classify(answer).kind is Kind.OUT_OF_OFFICE


# -- precision: human replies stay replies ----------------------------------------------------

HUMAN_BODIES = [
    "I'll be out of office next week, let's talk after.",
    "I am currently out of the office but wanted to answer quickly: yes, Tuesday works.",
    "Thanks for your email. I'm out of the office until Monday; please contact Jane for pricing.",
    "I am on vacation until March 3 with limited access to email, but happy to chat then.",
    "Ich bin bis zum 14.03. im Urlaub, danach gerne ein Termin.",
    "Je suis absent jusqu'au 3 mars, on en reparle à mon retour ?",
    "Estoy de vacaciones hasta el 3 de marzo. Hablamos a mi regreso.",
    "Sono in ferie fino al 3 marzo, ne parliamo al mio rientro.",
    "Ik ben met vakantie tot 3 maart, daarna graag een afspraak.",
    "Jag är på semester till 3 mars, hör av dig när jag är tillbaka.",
    "We have received your proposal and will review it next week.",
    "Thank you for contacting us about this; we will discuss it internally.",
    "Is this an automatic reply? I keep getting these.",
    "Our office is closed on Friday, so Thursday would be better for the call.",
]


@pytest.mark.parametrize("body", HUMAN_BODIES)
@pytest.mark.parametrize("quoted", [True, False], ids=["quoted", "unquoted"])
def test_human_reply_mentioning_absence_stays_a_reply(body: str, quoted: bool) -> None:
    message = build_reply(body=body, quote="Hi, any news?" if quoted else None)
    c = classify(message)
    assert c.kind is Kind.REPLY, c.reasons


def test_template_wording_above_a_quoted_original_is_a_person_answering() -> None:
    body = (
        "I am currently out of the office with limited access to email. For urgent matters"
        " please contact Sam."
    )
    assert classify(build_reply(body=body)).kind is Kind.REPLY
    assert classify(build_reply(body=body, quote=None)).kind is Kind.OUT_OF_OFFICE


def test_mailing_list_post_is_not_decided_on_its_body() -> None:
    body = (
        "I am currently out of the office with limited access to email. For urgent matters"
        " please contact Sam."
    )
    message = build_reply(body=body, quote=None, headers={"List-Id": "<dev.lists.example>"})
    assert classify(message).kind is Kind.REPLY


def test_long_text_is_not_decided_on_wording_alone() -> None:
    body = (
        "I am currently out of the office with limited access to email. For urgent matters"
        " please contact Sam.\n\n" + "Here are my detailed thoughts on the proposal. " * 60
    )
    assert classify(build_reply(body=body, quote=None)).kind is Kind.REPLY


# -- auto-replies that are not out-of-office --------------------------------------------------


@pytest.mark.parametrize("style", ["ticket", "acknowledgement", "challenge"])
@pytest.mark.parametrize("auto_submitted", [True, False], ids=["headers", "no-headers"])
def test_other_auto_replies_are_auto_reply(style: str, auto_submitted: bool) -> None:
    c = classify(build_auto_reply(style=style, auto_submitted=auto_submitted))  # type: ignore[arg-type]
    assert c.kind is Kind.AUTO_REPLY
    assert c.return_date is None
    assert c.reasons


def test_office_hours_wording_does_not_make_an_out_of_office() -> None:
    body = "We received your message out of office hours and will answer on the next working day."
    c = classify(build_auto_reply(body=body))
    assert c.kind is Kind.AUTO_REPLY


# -- the body reader --------------------------------------------------------------------------


def _message(**parts: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "x"
    if "plain" in parts:
        message.set_content(parts["plain"])
    if "html" in parts:
        if "plain" in parts:
            message.add_alternative(parts["html"], subtype="html")
        else:
            message.set_content(parts["html"], subtype="html")
    return message


def test_body_text_prefers_plain_text() -> None:
    assert body_text(_message(plain="hello", html="<p>other</p>")).strip() == "hello"


def test_body_text_strips_html_and_cuts_the_quoted_original() -> None:
    html = (
        "<html><head><style>p{}</style></head><body><p>I am away&nbsp;today</p>"
        "<blockquote>our own words</blockquote></body></html>"
    )
    text = body_text(_message(html=html))
    assert "I am away\xa0today" in text
    assert "our own words" not in text


def test_body_text_skips_attachments_and_attached_messages() -> None:
    message = _message(plain="own words")
    attached = email.message_from_string("Subject: original\n\nI am back on 3 March.\n")
    message.add_attachment(attached)
    message.add_attachment(b"back on 3 March", maintype="text", subtype="plain", filename="a.txt")
    assert body_text(message).strip() == "own words"
    only_attached = EmailMessage()
    only_attached.add_attachment(attached)
    assert body_text(only_attached) == ""


def test_body_text_decodes_the_declared_charset_and_survives_a_wrong_one() -> None:
    raw = (
        b"Subject: x\nContent-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: 8bit\n\nZur\xfcck am 3.3.\n"
    )
    assert "Zurück" in body_text(email.message_from_bytes(raw, policy=email.policy.compat32))
    raw = raw.replace(b"iso-8859-1", b"no-such-charset")
    assert body_text(email.message_from_bytes(raw, policy=email.policy.compat32))


def test_detect_without_a_body_uses_headers_and_subject() -> None:
    headers = parse_headers(b"Subject: Automatic reply: hi\n\n")
    verdict = detect_auto_reply(headers)
    assert verdict is not None
    assert not verdict.out_of_office
    assert detect_auto_reply(parse_headers(b"Subject: Re: hi\n\n")) is None


def test_body_text_drops_unclosed_scripts_and_keeps_visible_text() -> None:
    html = "<p>I am away</p><script>var x = '<p>back on 3 March</p>';" + "<script" * 5000
    text = body_text(_message(html=html))
    assert "I am away" in text
    assert "back on" not in text


# -- the body can be handed in as text (classify's fast path) --------------------------------


@pytest.mark.parametrize("language", OOO_LANGUAGES)
def test_a_body_given_as_text_decides_like_the_message(language: str) -> None:
    raw = build_out_of_office(language=language, return_date=dt.date(2027, 3, 15))
    headers = parse_headers(raw)
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    by_message = detect_auto_reply(headers, message)
    assert by_message is not None
    assert detect_auto_reply(headers, body=body_text(message)) == by_message


def test_a_body_given_as_text_takes_the_place_of_the_message() -> None:
    """The auto-reply body decides even though the message passed is a human reply."""
    body = body_text(email.message_from_bytes(build_out_of_office(auto_submitted=False)))
    reply = build_reply(quote=None)
    message = email.message_from_bytes(reply)
    assert detect_auto_reply(parse_headers(reply), message) is None
    verdict = detect_auto_reply(parse_headers(reply), message, body=body)
    assert verdict is not None
    assert verdict.out_of_office
