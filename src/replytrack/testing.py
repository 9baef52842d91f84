"""Test doubles and message builders for the tests of hosts (and ours).

In the spirit of httpx's ``MockTransport`` and structlog's ``capture_logs``: a host testing its
campaign logic needs realistic incoming mail - a human reply to a given send, an out-of-office
in the prospect's language with a return date, a ticket acknowledgement, a bounce - without
pasting strings. Every builder returns the message as **bytes**, exactly as a mailbox source
delivers it (CRLF line ends, RFC 2047-encoded non-ASCII headers), so it can be handed to
`replytrack.classify`, ``ReplyTracker.process`` or ``Correlator.correlate`` unchanged; use
``email.message_from_bytes`` when a test wants to look inside.

Rule 1: builders produce what real systems send: ``Date``, ``Message-ID``, ``In-Reply-To`` and
        ``References`` to the send being answered, the headers auto-responders set (RFC 3834
        ``Auto-Submitted``, Exchange's ``X-Auto-Response-Suppress``), and for bounces an RFC 3464
        ``multipart/report`` with the original's headers attached.
Rule 2: builders are deterministic: without an explicit ``date`` and ``message_id`` the same
        arguments give the same bytes, so tests can compare them.
Rule 3: every header and body choice can be overridden, and ``headers=`` adds or replaces
        fields, so a test can build exactly the edge case it is about.
"""

from __future__ import annotations

import datetime as _dt
import email.policy
import email.utils
import hashlib
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Final, Literal

import attrs

from replytrack.events import ReplyEvent
from replytrack.sources.memory import MemorySource

__all__ = [
    "OOO_LANGUAGES",
    "OOO_TEMPLATES",
    "CapturingHook",
    "MemorySource",
    "OutOfOfficeTemplate",
    "build_auto_reply",
    "build_bounce",
    "build_out_of_office",
    "build_reply",
    "format_date",
]


class CapturingHook:
    """A hook for tests: records the events it receives, and fails on demand.

    Use it for `ReplyTracker`'s ``campaign_stop`` or ``crm_log``::

        stop = CapturingHook()
        tracker = ReplyTracker(store, campaign_stop=stop)
        ...
        assert [e.ref for e in stop.events] == ["c42:p7"]

    Attributes:
        events: the events received, in order (failed calls are not recorded).
        failures: how many of the next calls raise `RuntimeError`, as a host's CRM outage would.
        calls: every call, failed ones included.
    """

    def __init__(self, *, failures: int = 0) -> None:
        self.events: list[ReplyEvent] = []
        self.failures: int = failures
        self.calls: int = 0

    def __call__(self, event: ReplyEvent) -> None:
        """Record `event`, or raise while injected failures remain."""
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("hook failure injected by CapturingHook")
        self.events.append(event)


_DEFAULT_DATE: Final = _dt.datetime(2027, 3, 1, 9, 30, tzinfo=_dt.timezone.utc)
_POLICY: Final = email.policy.SMTP.clone(max_line_length=78)


def _message_id(seed: str, domain: str) -> str:
    # Deterministic (Rule 2): derived from the arguments, not from a clock or a random source.
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"<{digest}@{domain}>"


def _bracket(msg_id: str) -> str:
    msg_id = msg_id.strip()
    return msg_id if msg_id.startswith("<") else f"<{msg_id}>"


def _domain(address: str) -> str:
    addr = email.utils.parseaddr(address)[1]
    return addr.rpartition("@")[2] or "example.com"


def _finish(message: EmailMessage, headers: Mapping[str, str] | None) -> bytes:
    for name, value in (headers or {}).items():
        del message[name]
        message[name] = value
    return message.as_bytes(policy=_POLICY)


def _base(
    *,
    from_: str,
    to: str | Sequence[str],
    subject: str,
    date: _dt.datetime | None,
    message_id: str | None,
    in_reply_to: str | None,
    references: Sequence[str] | None,
    seed: str,
) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message["From"] = from_
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(date or _DEFAULT_DATE)
    message["Message-ID"] = (
        _bracket(message_id) if message_id else _message_id(seed, _domain(from_))
    )
    if in_reply_to:
        message["In-Reply-To"] = _bracket(in_reply_to)
        refs = [_bracket(r) for r in references] if references is not None else []
        if _bracket(in_reply_to) not in refs:
            refs.append(_bracket(in_reply_to))
        message["References"] = " ".join(refs)
    elif references:
        message["References"] = " ".join(_bracket(r) for r in references)
    return message


# --------------------------------------------------------------------------------------------
# Human replies
# --------------------------------------------------------------------------------------------


def build_reply(
    *,
    in_reply_to: str | None = "<send-1@mail.sales.example>",
    references: Sequence[str] | None = None,
    from_: str = "Jo Prospect <jo@customer.example>",
    to: str | Sequence[str] = "Rep <rep@sales.example>",
    cc: str | Sequence[str] = (),
    subject: str = "Re: Quick question",
    body: str = "Thanks, that sounds good. Could we talk on Tuesday?\n\nJo",
    quote: str | None = "Hi Jo, do you have 15 minutes this week?",
    date: _dt.datetime | None = None,
    message_id: str | None = None,
    html: bool = False,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Build a human reply to a send, as a mail client writes it.

    Args:
        in_reply_to: the Message-ID of the send answered (brackets optional); ``None`` for a
            message that answers nothing.
        references: earlier ids of the thread; `in_reply_to` is appended when missing.
        from_: the responder.
        to: the recipients.
        cc: the Cc recipients.
        subject: the subject.
        body: the responder's own text.
        quote: the original text, quoted below an "On ... wrote:" line; ``None`` for none.
        date: the ``Date`` (default: 2027-03-01 09:30 UTC).
        message_id: the reply's own id (default: derived from the arguments).
        html: add a ``text/html`` alternative, as most clients do.
        headers: fields to add or replace.

    Returns:
        The message as bytes.
    """
    message = _base(
        from_=from_,
        to=to,
        subject=subject,
        date=date,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        seed=f"reply|{in_reply_to}|{from_}|{subject}|{body}",
    )
    if cc:
        message["Cc"] = cc if isinstance(cc, str) else ", ".join(cc)
    text = body
    if quote is not None:
        when = email.utils.format_datetime((date or _DEFAULT_DATE) - _dt.timedelta(days=1))
        quoted = "\n".join("> " + line for line in quote.splitlines())
        text = f"{body}\n\nOn {when}, {message['To']} wrote:\n{quoted}\n"
    message.set_content(text)
    if html:
        paragraphs = "".join(f"<p>{line}</p>" for line in body.splitlines() if line)
        message.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
        # The stdlib draws boundaries from the global `random`: fix it, so builds are
        # deterministic (Rule 2).
        message.set_boundary("=_" + hashlib.sha256(text.encode()).hexdigest()[:24])
    return _finish(message, headers)


# --------------------------------------------------------------------------------------------
# Out-of-office replies
# --------------------------------------------------------------------------------------------


@attrs.frozen
class OutOfOfficeTemplate:
    """How an out-of-office reads in one language.

    Attributes:
        automatic_reply: the localised Outlook/Exchange subject prefix ("Automatic reply").
        absence_subject: a vacation-responder subject ("Out of Office").
        body: the notice without a date.
        returning: the sentence appended when a return date is stated, ``{date}`` where it goes.
        months: month names as written in a date.
        weekdays: weekday names, Monday first (empty: not written).
        date_format: a `str.format` pattern over ``d``, ``dd``, ``m``, ``mm``, ``yyyy``,
            ``month`` and ``weekday``.
    """

    automatic_reply: str
    absence_subject: str
    body: str
    returning: str
    months: tuple[str, ...]
    weekdays: tuple[str, ...]
    date_format: str


_EN_MONTHS: Final = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

OOO_TEMPLATES: Final[Mapping[str, OutOfOfficeTemplate]] = {
    "en": OutOfOfficeTemplate(
        returning="I will be back on {date}.",
        automatic_reply="Automatic reply",
        absence_subject="Out of Office",
        body=(
            "Thank you for your email. I am currently out of the office with limited access"
            " to email. For urgent matters, please contact my colleague Sam Lee."
        ),
        months=tuple(_EN_MONTHS),
        weekdays=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        date_format="{weekday} {d} {month}",
    ),
    "de": OutOfOfficeTemplate(
        returning="Ab dem {date} bin ich wieder im Büro.",
        automatic_reply="Automatische Antwort",
        absence_subject="Abwesenheitsnotiz",
        body=(
            "Vielen Dank für Ihre Nachricht. Ich bin derzeit nicht im Büro und habe keinen"
            " Zugriff auf meine E-Mails. In dringenden Fällen wenden Sie sich bitte an"
            " Sam Lee."
        ),
        months=(
            "Januar",
            "Februar",
            "März",
            "April",
            "Mai",
            "Juni",
            "Juli",
            "August",
            "September",
            "Oktober",
            "November",
            "Dezember",
        ),
        weekdays=(),
        date_format="{dd}.{mm}.{yyyy}",
    ),
    "fr": OutOfOfficeTemplate(
        returning="Je serai de retour le {date}.",
        automatic_reply="Réponse automatique",
        absence_subject="Absent du bureau",
        body=(
            "Merci pour votre message. Je suis actuellement absent du bureau avec un accès"
            " limité à mes e-mails. En cas d'urgence, veuillez contacter Sam Lee."
        ),
        months=(
            "janvier",
            "février",
            "mars",
            "avril",
            "mai",
            "juin",
            "juillet",
            "août",
            "septembre",
            "octobre",
            "novembre",
            "décembre",
        ),
        weekdays=("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
        date_format="{weekday} {d} {month}",
    ),
    "es": OutOfOfficeTemplate(
        returning="Estaré de vuelta el {date}.",
        automatic_reply="Respuesta automática",
        absence_subject="Fuera de la oficina",
        body=(
            "Gracias por su mensaje. Estoy fuera de la oficina con acceso limitado al correo."
            " Para asuntos urgentes, contacte con Sam Lee."
        ),
        months=(
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ),
        weekdays=(),
        date_format="{d} de {month}",
    ),
    "it": OutOfOfficeTemplate(
        returning="Rientro in ufficio il {date}.",
        automatic_reply="Risposta automatica",
        absence_subject="Fuori sede",
        body=(
            "Grazie per il suo messaggio. Sono fuori sede con accesso limitato alla posta."
            " Per urgenze contattare Sam Lee."
        ),
        months=(
            "gennaio",
            "febbraio",
            "marzo",
            "aprile",
            "maggio",
            "giugno",
            "luglio",
            "agosto",
            "settembre",
            "ottobre",
            "novembre",
            "dicembre",
        ),
        weekdays=(),
        date_format="{d} {month}",
    ),
    "pt": OutOfOfficeTemplate(
        returning="Estarei de volta no dia {date}.",
        automatic_reply="Resposta automática",
        absence_subject="Fora do escritório",
        body=(
            "Obrigado pela sua mensagem. Estou fora do escritório com acesso limitado ao"
            " e-mail. Para assuntos urgentes, contacte Sam Lee."
        ),
        months=(
            "janeiro",
            "fevereiro",
            "março",
            "abril",
            "maio",
            "junho",
            "julho",
            "agosto",
            "setembro",
            "outubro",
            "novembro",
            "dezembro",
        ),
        weekdays=(),
        date_format="{d} de {month}",
    ),
    "nl": OutOfOfficeTemplate(
        returning="Ik ben terug op {date}.",
        automatic_reply="Automatisch antwoord",
        absence_subject="Afwezig",
        body=(
            "Bedankt voor uw bericht. Ik ben momenteel afwezig en heb beperkt toegang tot mijn"
            " e-mail. Voor dringende zaken kunt u contact opnemen met Sam Lee."
        ),
        months=(
            "januari",
            "februari",
            "maart",
            "april",
            "mei",
            "juni",
            "juli",
            "augustus",
            "september",
            "oktober",
            "november",
            "december",
        ),
        weekdays=(),
        date_format="{d} {month}",
    ),
    "sv": OutOfOfficeTemplate(
        returning="Jag är tillbaka den {date}.",
        automatic_reply="Automatiskt svar",
        absence_subject="Frånvaro",
        body=(
            "Tack för ditt mejl. Jag är på semester med begränsad tillgång till e-post."
            " I brådskande ärenden, kontakta Sam Lee."
        ),
        months=(
            "januari",
            "februari",
            "mars",
            "april",
            "maj",
            "juni",
            "juli",
            "augusti",
            "september",
            "oktober",
            "november",
            "december",
        ),
        weekdays=(),
        date_format="{d} {month}",
    ),
    "da": OutOfOfficeTemplate(
        returning="Jeg er tilbage den {date}.",
        automatic_reply="Automatisk svar",
        absence_subject="Fraværende",
        body=(
            "Tak for din mail. Jeg er på ferie med begrænset adgang til mail. I hastesager"
            " kontakt venligst Sam Lee."
        ),
        months=(
            "januar",
            "februar",
            "marts",
            "april",
            "maj",
            "juni",
            "juli",
            "august",
            "september",
            "oktober",
            "november",
            "december",
        ),
        weekdays=(),
        date_format="{d}. {month}",
    ),
    "no": OutOfOfficeTemplate(
        returning="Jeg er tilbake {date}.",
        automatic_reply="Automatisk svar",
        absence_subject="Fravær",
        body=(
            "Takk for din e-post. Jeg er på ferie med begrenset tilgang til e-post. Ved"
            " hastesaker, kontakt Sam Lee."
        ),
        months=(
            "januar",
            "februar",
            "mars",
            "april",
            "mai",
            "juni",
            "juli",
            "august",
            "september",
            "oktober",
            "november",
            "desember",
        ),
        weekdays=(),
        date_format="{d}. {month}",
    ),
    "fi": OutOfOfficeTemplate(
        returning="Palaan toimistolle {date}.",
        automatic_reply="Automaattinen vastaus",
        absence_subject="Poissa",
        body=(
            "Kiitos viestistäsi. Olen lomalla ja luen sähköpostia rajoitetusti. Kiireellisissä"
            " asioissa ota yhteyttä Sam Leeen."
        ),
        months=(),
        weekdays=(),
        date_format="{d}.{m}.{yyyy}",
    ),
    "pl": OutOfOfficeTemplate(
        returning="Wracam do biura {date}.",
        automatic_reply="Odpowiedź automatyczna",
        absence_subject="Nieobecność",
        body=(
            "Dziękuję za wiadomość. Jestem na urlopie z ograniczonym dostępem do poczty."
            " W pilnych sprawach proszę o kontakt z Sam Lee."
        ),
        months=(),
        weekdays=(),
        date_format="{dd}.{mm}.{yyyy}",
    ),
    "ja": OutOfOfficeTemplate(
        returning="{date}より出社いたします。",
        automatic_reply="自動応答",
        absence_subject="不在通知",
        body=(
            "メールありがとうございます。現在休暇をいただいております。"
            "ご迷惑をおかけしますが、お急ぎの場合は Sam Lee までご連絡ください。"
        ),
        months=(),
        weekdays=(),
        date_format="{m}月{d}日",
    ),
    "zh": OutOfOfficeTemplate(
        returning="我将于{date}返回办公室。",
        automatic_reply="自动回复",
        absence_subject="休假",
        body="谢谢您的邮件。我目前正在休假，无法及时查看邮件。紧急事务请联系 Sam Lee。",  # noqa: RUF001 - Chinese punctuation
        months=(),
        weekdays=(),
        date_format="{m}月{d}日",
    ),
}

#: The languages `build_out_of_office` writes.
OOO_LANGUAGES: Final = tuple(OOO_TEMPLATES)


def format_date(language: str, day: _dt.date) -> str:
    """Write a date the way an out-of-office in `language` does ("Monday 3 March", "03.03.2027").

    Args:
        language: one of `OOO_LANGUAGES`.
        day: the date.

    Returns:
        The date as text.

    Raises:
        KeyError: the language is not one of `OOO_LANGUAGES`.
    """
    template = OOO_TEMPLATES[language]
    return template.date_format.format(
        d=day.day,
        dd=f"{day.day:02d}",
        m=day.month,
        mm=f"{day.month:02d}",
        yyyy=day.year,
        month=template.months[day.month - 1] if template.months else "",
        weekday=template.weekdays[day.weekday()] if template.weekdays else "",
    )


def build_out_of_office(
    *,
    language: str = "en",
    return_date: _dt.date | None = None,
    in_reply_to: str | None = "<send-1@mail.sales.example>",
    original_subject: str = "Quick question",
    subject: str | None = None,
    subject_style: Literal["automatic_reply", "absence", "original"] = "automatic_reply",
    body: str | None = None,
    from_: str = "Jo Prospect <jo@customer.example>",
    to: str | Sequence[str] = "Rep <rep@sales.example>",
    date: _dt.datetime | None = None,
    message_id: str | None = None,
    auto_submitted: bool = True,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Build an out-of-office reply, localised, as Exchange or a vacation responder sends it.

    Args:
        language: one of `OOO_LANGUAGES` (en, de, fr, es, it, pt, nl, sv, da, no, fi, pl, ja,
            zh).
        return_date: the date the body says the sender is back, written in the language's
            usual format (see `format_date`); ``None`` for a notice that states none.
        in_reply_to: the Message-ID of the send answered; ``None`` for none.
        original_subject: the subject of the send answered.
        subject: the whole subject, overriding `subject_style`.
        subject_style: ``"automatic_reply"``: Outlook's localised prefix before the original
            subject ("Automatic reply: Quick question"); ``"absence"``: a vacation-responder
            subject ("Out of Office"); ``"original"``: "Re: " and the original subject.
        body: the whole body text, overriding the language's template.
        from_: the absent person.
        to: the recipients.
        date: the ``Date`` (default: 2027-03-01 09:30 UTC, a Monday).
        message_id: the notice's own id (default: derived from the arguments).
        auto_submitted: add the headers auto-responders set (``Auto-Submitted: auto-replied``,
            ``X-Auto-Response-Suppress: All``); ``False`` leaves only subject and body as
            evidence.
        headers: fields to add or replace.

    Returns:
        The message as bytes.

    Raises:
        KeyError: the language is not one of `OOO_LANGUAGES`.
    """
    template = OOO_TEMPLATES[language]
    if subject is None:
        if subject_style == "automatic_reply":
            subject = f"{template.automatic_reply}: {original_subject}"
        elif subject_style == "absence":
            subject = template.absence_subject
        else:
            subject = f"Re: {original_subject}"
    if body is None:
        if return_date is None:
            body = template.body
        else:
            date_text = format_date(language, return_date)
            separator = "" if language in ("ja", "zh") else " "
            body = template.body + separator + template.returning.format(date=date_text)
    message = _base(
        from_=from_,
        to=to,
        subject=subject,
        date=date,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=None,
        seed=f"ooo|{language}|{return_date}|{in_reply_to}|{from_}|{subject}|{body}",
    )
    if auto_submitted:
        message["Auto-Submitted"] = "auto-replied"
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(body)
    return _finish(message, headers)


# --------------------------------------------------------------------------------------------
# Other auto-replies
# --------------------------------------------------------------------------------------------

_AUTO_REPLY_BODIES: Final = {
    "ticket": (
        "Thank you for contacting Customer Support. We have received your request and a"
        " ticket has been created.\n\nTicket number: #48213\n\nOne of our agents will get back"
        " to you within one business day.\n\nThis is an automated message; please do not"
        " reply."
    ),
    "acknowledgement": (
        "Thanks for reaching out to us! We have received your message and will answer as soon"
        " as possible.\n\nThe Customer team"
    ),
    "challenge": (
        "I only accept mail from known senders. To verify that you are a human, please reply"
        " to this message without changing the subject.\n\nThis is an automatic reply."
    ),
}


def build_auto_reply(
    *,
    style: Literal["ticket", "acknowledgement", "challenge"] = "ticket",
    in_reply_to: str | None = "<send-1@mail.sales.example>",
    original_subject: str = "Quick question",
    subject: str | None = None,
    body: str | None = None,
    from_: str = "Customer Support <support@customer.example>",
    to: str | Sequence[str] = "Rep <rep@sales.example>",
    date: _dt.datetime | None = None,
    message_id: str | None = None,
    auto_submitted: bool = True,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Build an automatic answer that is not an out-of-office.

    Args:
        style: ``"ticket"`` (a help desk's ticket acknowledgement), ``"acknowledgement"``
            ("thanks for reaching out, we'll answer soon") or ``"challenge"`` (a
            challenge-response spam filter).
        in_reply_to: the Message-ID of the send answered; ``None`` for none.
        original_subject: the subject of the send answered.
        subject: the whole subject (default: "Auto-Reply: " and the original subject; for a
            ticket "[#48213] Re: " and the original subject).
        body: the whole body text, overriding the style's.
        from_: the responding system.
        to: the recipients.
        date: the ``Date`` (default: 2027-03-01 09:30 UTC).
        message_id: the message's own id (default: derived from the arguments).
        auto_submitted: add ``Auto-Submitted: auto-replied`` and ``Precedence: auto_reply``;
            ``False`` leaves the subject and body as the only evidence.
        headers: fields to add or replace.

    Returns:
        The message as bytes.
    """
    if subject is None:
        prefix = "[#48213] Re: " if style == "ticket" else "Auto-Reply: "
        subject = prefix + original_subject
    text = body if body is not None else _AUTO_REPLY_BODIES[style]
    message = _base(
        from_=from_,
        to=to,
        subject=subject,
        date=date,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=None,
        seed=f"auto|{style}|{in_reply_to}|{from_}|{subject}|{text}",
    )
    if auto_submitted:
        message["Auto-Submitted"] = "auto-replied"
        message["Precedence"] = "auto_reply"
    message.set_content(text)
    return _finish(message, headers)


# --------------------------------------------------------------------------------------------
# Bounces (RFC 3464 delivery status notifications)
# --------------------------------------------------------------------------------------------


def build_bounce(
    *,
    recipients: Sequence[str] = ("jo@customer.example",),
    status: str = "5.1.1",
    diagnostic: str | None = (
        "smtp; 550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual"
        " mailbox table"
    ),
    action: Literal["failed", "delayed", "delivered", "relayed", "expanded"] = "failed",
    original_message_id: str | None = "<send-1@mail.sales.example>",
    original_from: str = "Rep <rep@sales.example>",
    original_subject: str = "Quick question",
    original_body: str | None = None,
    reporting_mta: str = "mx.sales.example",
    remote_mta: str | None = "mx.customer.example",
    to: str = "rep@sales.example",
    date: _dt.datetime | None = None,
    message_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Build an RFC 3464 delivery status notification, as Postfix writes it.

    A ``multipart/report; report-type=delivery-status`` with a human-readable part, a
    ``message/delivery-status`` part with one per-recipient block each, and the original's
    headers as ``text/rfc822-headers`` - or the whole original as ``message/rfc822`` when
    `original_body` is given.

    Args:
        recipients: the addresses that failed (or were delayed ...).
        status: the RFC 3463 enhanced status code of every recipient.
        diagnostic: the ``Diagnostic-Code``; ``{address}`` is replaced by each recipient;
            ``None`` for none.
        action: the RFC 3464 action: ``"failed"`` is a bounce, ``"delayed"`` a delay notice,
            ``"delivered"``/``"relayed"`` a receipt.
        original_message_id: the Message-ID of the send that bounced; ``None`` leaves it out.
        original_from: the sender of the original.
        original_subject: the subject of the original.
        original_body: attach the whole original with this body (``message/rfc822``) instead
            of its headers only.
        reporting_mta: the MTA that writes the report.
        remote_mta: the MTA that refused the mail; ``None`` for none.
        to: where the report goes (the original's envelope sender).
        date: the ``Date`` (default: 2027-03-01 09:30 UTC).
        message_id: the report's own id (default: derived from the arguments).
        headers: fields of the report to add or replace.

    Returns:
        The message as bytes.
    """
    when = date or _DEFAULT_DATE
    boundary = (
        "bounce-" + hashlib.sha256(repr((recipients, status, action)).encode()).hexdigest()[:16]
    )
    own_id = (
        _bracket(message_id)
        if message_id
        else _message_id(
            f"bounce|{recipients}|{status}|{action}|{original_message_id}", reporting_mta
        )
    )
    subject = {
        "failed": "Undelivered Mail Returned to Sender",
        "delayed": "Delayed Mail (still being retried)",
    }.get(action, "Successful Mail Delivery Report")
    lines = [
        f"From: MAIL-DAEMON <MAILER-DAEMON@{reporting_mta}>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {email.utils.format_datetime(when)}",
        f"Message-ID: {own_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    for name, value in (headers or {}).items():
        lines = [line for line in lines if not line.lower().startswith(name.lower() + ":")]
        lines.append(f"{name}: {value}")
    verb = {"failed": "could not be delivered", "delayed": "has not yet been delivered"}.get(
        action, "was successfully delivered"
    )
    lines += [
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host {reporting_mta}.",
        "",
        f"Your message {verb} to one or more recipients.",
        "",
    ]
    for address in recipients:
        detail = diagnostic.format(address=address) if diagnostic else status
        lines.append(f"<{address}>: {detail}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {email.utils.format_datetime(when - _dt.timedelta(minutes=1))}",
    ]
    for address in recipients:
        lines += [
            "",
            f"Final-Recipient: rfc822; {address}",
            f"Original-Recipient: rfc822;{address}",
        ]
        lines += [f"Action: {action}", f"Status: {status}"]
        if remote_mta:
            lines.append(f"Remote-MTA: dns; {remote_mta}")
        if diagnostic:
            lines.append(f"Diagnostic-Code: {diagnostic.format(address=address)}")
    original = [
        f"From: {original_from}",
        f"To: {', '.join(recipients)}",
        f"Subject: {original_subject}",
        f"Date: {email.utils.format_datetime(when - _dt.timedelta(minutes=2))}",
    ]
    if original_message_id:
        original.append(f"Message-ID: {_bracket(original_message_id)}")
    original.append("MIME-Version: 1.0")
    if original_body is None:
        lines += ["", f"--{boundary}", "Content-Description: Undelivered Message Headers"]
        lines += ["Content-Type: text/rfc822-headers", "", *original]
    else:
        lines += ["", f"--{boundary}", "Content-Description: Undelivered Message"]
        lines += ["Content-Type: message/rfc822", "", *original]
        lines += ["Content-Type: text/plain; charset=utf-8", "", *original_body.splitlines()]
    lines += ["", f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8")
