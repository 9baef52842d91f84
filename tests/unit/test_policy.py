"""The default policy of DESIGN.md step 6, its configuration, and the domain helpers."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest

from replytrack.classify import Classification, Kind
from replytrack.correlate import Correlation, MatchMethod, Role
from replytrack.dsn import Bounce, BouncedRecipient
from replytrack.errors import ConfigError
from replytrack.headers import Address
from replytrack.policy import (
    FREE_MAIL_DOMAINS,
    Action,
    Decision,
    Policy,
    Scope,
    is_free_mail,
    organisational_domain,
)
from replytrack.store import SentMessage

TODAY = dt.date(2027, 3, 1)
JO = "jo@customer.example"  # the prospect, on To
SAM = "sam@customer.example"  # Jo's colleague, on Cc

STOP, PAUSE, LOG = Action.STOP, Action.PAUSE, Action.LOG_ONLY


def _sent(to: str = JO, cc: tuple[str, ...] = (SAM,)) -> SentMessage:
    return SentMessage(
        message_id="send-1@mail.sales.example",
        ref="c42:p7",
        sender="rep@sales.example",
        to=(to,),
        cc=cc,
    )


def _recipient(
    address: str = JO, *, hard: bool = True, permanent: bool = True
) -> BouncedRecipient:
    return BouncedRecipient(
        address=address,
        status="5.1.1" if permanent else "4.2.2",
        reason="userunknown" if hard else "mailboxfull",
        permanent=permanent,
        hard=hard,
        diagnostic=None,
    )


def _correlation(
    kind: Kind = Kind.REPLY,
    *,
    role: Role = Role.RECIPIENT,
    return_date: dt.date | None = None,
    bounce: Bounce | None = None,
    sent: SentMessage | None = None,
    no_send: bool = False,
) -> Correlation:
    return Correlation(
        ref="c42:p7",
        sent=None if no_send else (sent or _sent()),
        method=MatchMethod.IN_REPLY_TO,
        responder=Address("Jo", JO),
        role=role,
        classification=Classification(kind=kind, bounce=bounce, return_date=return_date),
    )


def _bounce(*recipients: BouncedRecipient) -> Bounce:
    return Bounce(recipients=recipients, original_message_id="send-1@mail.sales.example")


HARD = _bounce(_recipient(hard=True))
SOFT = _bounce(_recipient(hard=False, permanent=False))
BLOCKED = _bounce(_recipient(hard=False, permanent=True))  # 5.x.x but the address lives


# -- the defaults, table-driven -------------------------------------------------------------------


MAR10, MAR11 = dt.date(2027, 3, 10), dt.date(2027, 3, 11)


@pytest.mark.parametrize(
    ("kind", "role", "bounce", "return_date", "expected"),
    [
        (Kind.REPLY, Role.RECIPIENT, None, None, (STOP, None)),
        (Kind.REPLY, Role.CC, None, None, (STOP, None)),
        (Kind.REPLY, Role.OTHER, None, None, (STOP, None)),
        (Kind.REPLY, Role.UNKNOWN, None, None, (STOP, None)),
        (Kind.OUT_OF_OFFICE, Role.RECIPIENT, None, MAR10, (PAUSE, MAR11)),
        (Kind.OUT_OF_OFFICE, Role.CC, None, MAR10, (PAUSE, MAR11)),
        (Kind.OUT_OF_OFFICE, Role.OTHER, None, MAR10, (PAUSE, MAR11)),
        (Kind.OUT_OF_OFFICE, Role.RECIPIENT, None, None, (LOG, None)),
        (Kind.OUT_OF_OFFICE, Role.RECIPIENT, None, dt.date(2027, 2, 28), (LOG, None)),
        (Kind.OUT_OF_OFFICE, Role.RECIPIENT, None, TODAY, (PAUSE, dt.date(2027, 3, 2))),
        (Kind.AUTO_REPLY, Role.RECIPIENT, None, None, (LOG, None)),
        (Kind.AUTO_REPLY, Role.RECIPIENT, None, MAR10, (LOG, None)),
        (Kind.BOUNCE, Role.OTHER, HARD, None, (STOP, None)),
        (Kind.BOUNCE, Role.OTHER, SOFT, None, (LOG, None)),
        (Kind.BOUNCE, Role.OTHER, BLOCKED, None, (LOG, None)),
        (Kind.BOUNCE, Role.OTHER, None, None, (LOG, None)),
        (Kind.DELAY, Role.OTHER, SOFT, None, (LOG, None)),
        (Kind.COMPLAINT, Role.OTHER, None, None, (STOP, None)),
        (Kind.RECEIPT, Role.RECIPIENT, None, None, (LOG, None)),
    ],
)
def test_default_policy(
    kind: Kind,
    role: Role,
    bounce: Bounce | None,
    return_date: dt.date | None,
    expected: tuple[Action, dt.date | None],
) -> None:
    decision = Policy().decide(
        _correlation(kind, role=role, bounce=bounce, return_date=return_date), today=TODAY
    )
    assert (decision.action, decision.resume_on) == expected
    assert decision.notify_crm
    assert decision.scope is Scope.PROSPECT
    assert decision.account_domain is None
    assert decision.reason
    assert "\n" not in decision.reason


def test_decision_reason_says_why() -> None:
    decision = Policy().decide(
        _correlation(Kind.OUT_OF_OFFICE, return_date=dt.date(2027, 3, 10)), today=TODAY
    )
    assert decision == Decision(
        action=PAUSE,
        resume_on=dt.date(2027, 3, 11),
        notify_crm=True,
        scope=Scope.PROSPECT,
        reason="out-of-office until 2027-03-10: pause until 2027-03-11",
    )


# -- out-of-office: margin, cap, dates ------------------------------------------------------------


def test_pause_is_capped_from_today() -> None:
    decision = Policy().decide(
        _correlation(Kind.OUT_OF_OFFICE, return_date=dt.date(2027, 9, 1)), today=TODAY
    )
    assert decision.action is PAUSE
    assert decision.resume_on == TODAY + dt.timedelta(days=30)
    assert "capped at 30 days" in decision.reason


def test_return_date_at_the_cap_is_not_capped() -> None:
    back = TODAY + dt.timedelta(days=29)  # + 1 day margin = exactly the cap
    decision = Policy().decide(_correlation(Kind.OUT_OF_OFFICE, return_date=back), today=TODAY)
    assert decision.resume_on == TODAY + dt.timedelta(days=30)
    assert "capped" not in decision.reason


@pytest.mark.parametrize(("margin", "cap"), [(0, 30), (3, 30), (1, 5), (dt.timedelta(days=2), 7)])
def test_margin_and_cap_are_configurable(margin: int | dt.timedelta, cap: int) -> None:
    policy = Policy(ooo_resume_margin=margin, ooo_pause_cap=cap)
    back = TODAY + dt.timedelta(days=4)
    decision = policy.decide(_correlation(Kind.OUT_OF_OFFICE, return_date=back), today=TODAY)
    expected = min(back + policy.ooo_resume_margin, TODAY + dt.timedelta(days=cap))
    assert decision.resume_on == expected


def test_past_return_date_pauses_nothing() -> None:
    decision = Policy(ooo_resume_margin=5).decide(
        _correlation(Kind.OUT_OF_OFFICE, return_date=TODAY - dt.timedelta(days=1)), today=TODAY
    )
    assert (decision.action, decision.resume_on) == (LOG, None)
    assert "already past" in decision.reason


def test_back_today_without_margin_pauses_nothing() -> None:
    decision = Policy(ooo_resume_margin=0).decide(
        _correlation(Kind.OUT_OF_OFFICE, return_date=TODAY), today=TODAY
    )
    assert (decision.action, decision.resume_on) == (LOG, None)


def test_undated_pause_pauses_an_out_of_office_without_return_date() -> None:
    decision = Policy(undated_pause=7).decide(_correlation(Kind.OUT_OF_OFFICE), today=TODAY)
    assert (decision.action, decision.resume_on) == (PAUSE, dt.date(2027, 3, 8))
    assert "without a return date" in decision.reason


def test_pause_configured_for_another_kind_uses_undated_pause() -> None:
    policy = Policy(soft_bounce=PAUSE, undated_pause=3)
    decision = policy.decide(_correlation(Kind.BOUNCE, bounce=SOFT), today=TODAY)
    assert (decision.action, decision.resume_on) == (PAUSE, dt.date(2027, 3, 4))


def test_a_return_date_on_another_kind_is_ignored() -> None:
    policy = Policy(auto_reply=PAUSE, undated_pause=2)
    correlation = _correlation(Kind.AUTO_REPLY, return_date=dt.date(2027, 3, 20))
    assert policy.decide(correlation, today=TODAY).resume_on == dt.date(2027, 3, 3)


def test_ooo_configured_to_stop_ignores_the_date() -> None:
    decision = Policy(out_of_office=STOP).decide(
        _correlation(Kind.OUT_OF_OFFICE, return_date=dt.date(2027, 3, 10)), today=TODAY
    )
    assert (decision.action, decision.resume_on) == (STOP, None)


# -- bounces: which recipient decides -------------------------------------------------------------


def test_hard_bounce_of_a_cc_recipient_does_not_stop_the_prospect() -> None:
    bounce = _bounce(_recipient(SAM, hard=True))
    decision = Policy().decide(_correlation(Kind.BOUNCE, bounce=bounce), today=TODAY)
    assert decision.action is LOG
    assert "Cc recipients only" in decision.reason


def test_hard_bounce_of_the_prospect_among_others_stops() -> None:
    bounce = _bounce(
        _recipient(SAM, hard=False, permanent=False), _recipient("JO@Customer.Example")
    )
    decision = Policy().decide(_correlation(Kind.BOUNCE, bounce=bounce), today=TODAY)
    assert decision.action is STOP
    assert decision.reason.startswith("hard bounce (JO@Customer.Example 5.1.1 userunknown)")


def test_soft_bounce_of_the_prospect_wins_over_a_hard_cc_bounce() -> None:
    bounce = _bounce(_recipient(SAM, hard=True), _recipient(JO, hard=False, permanent=False))
    assert Policy().decide(_correlation(Kind.BOUNCE, bounce=bounce), today=TODAY).action is LOG


def test_hard_bounce_of_an_unknown_address_stops() -> None:
    """A forwarding hop rewrote the address: nothing to compare with, the bounce decides."""
    bounce = _bounce(_recipient("jo.forward@elsewhere.example", hard=True))
    assert Policy().decide(_correlation(Kind.BOUNCE, bounce=bounce), today=TODAY).action is STOP


def test_hard_bounce_without_stored_send_stops() -> None:
    correlation = _correlation(Kind.BOUNCE, bounce=_bounce(_recipient(SAM)), no_send=True)
    assert Policy().decide(correlation, today=TODAY).action is STOP


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "kind", "bounce", "action"),
    [
        (Policy(reply=LOG), Kind.REPLY, None, LOG),
        (Policy(reply="log_only"), Kind.REPLY, None, LOG),
        (Policy(auto_reply=STOP), Kind.AUTO_REPLY, None, STOP),
        (Policy(hard_bounce="log_only"), Kind.BOUNCE, HARD, LOG),
        (Policy(soft_bounce=STOP), Kind.BOUNCE, SOFT, STOP),
        (Policy(delay=STOP), Kind.DELAY, SOFT, STOP),
        (Policy(complaint=LOG), Kind.COMPLAINT, None, LOG),
        (Policy(receipt=STOP), Kind.RECEIPT, None, STOP),
        (Policy(out_of_office=LOG), Kind.OUT_OF_OFFICE, None, LOG),
    ],
)
def test_action_per_kind_is_configurable(
    policy: Policy, kind: Kind, bounce: Bounce | None, action: Action
) -> None:
    correlation = _correlation(kind, bounce=bounce, return_date=dt.date(2027, 3, 5))
    assert policy.decide(correlation, today=TODAY).action is action


@pytest.mark.parametrize(
    ("role", "action"),
    [(Role.RECIPIENT, STOP), (Role.CC, STOP), (Role.OTHER, LOG), (Role.UNKNOWN, LOG)],
)
def test_reply_action_per_role(role: Role, action: Action) -> None:
    policy = Policy(reply_roles={Role.OTHER: LOG, "unknown": "log_only"})
    assert policy.decide(_correlation(role=role), today=TODAY).action is action


def test_reply_roles_apply_to_human_replies_only() -> None:
    policy = Policy(reply_roles={Role.OTHER: LOG})
    correlation = _correlation(Kind.COMPLAINT, role=Role.OTHER)
    assert policy.decide(correlation, today=TODAY).action is STOP


def test_crm_kinds_narrow_the_crm_hook() -> None:
    policy = Policy(crm_kinds={Kind.REPLY, "out_of_office"})
    assert policy.decide(_correlation(Kind.REPLY), today=TODAY).notify_crm
    assert not policy.decide(_correlation(Kind.RECEIPT), today=TODAY).notify_crm
    assert not Policy(crm_kinds=()).decide(_correlation(), today=TODAY).notify_crm


def test_policy_is_frozen_and_hashable() -> None:
    policy = Policy(reply_roles={Role.OTHER: LOG})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.reply = LOG  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.reply_roles[Role.CC] = LOG  # type: ignore[index]
    assert policy == Policy(reply_roles={Role.OTHER: LOG})
    assert hash(policy) == hash(Policy(reply_roles={Role.OTHER: LOG}))
    assert policy != Policy()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reply": "halt"},
        {"reply": None},
        {"scope": "company"},
        {"ooo_pause_cap": 0},
        {"ooo_pause_cap": dt.timedelta(hours=36)},
        {"ooo_pause_cap": "30"},
        {"ooo_pause_cap": True},
        {"ooo_resume_margin": -1},
        {"undated_pause": 0},
        {"undated_pause": 31},
        {"undated_pause": 10, "ooo_pause_cap": 7},
        {"ooo_resume_margin": dt.timedelta(hours=1)},
        {"soft_bounce": PAUSE},
        {"reply": "pause"},
        {"reply_roles": {Role.OTHER: PAUSE}},
        {"reply_roles": {"boss": STOP}},
        {"reply_roles": [(Role.OTHER, STOP)]},
        {"crm_kinds": "reply"},
        {"crm_kinds": ["spam"]},
        {"crm_kinds": 3},
        {"account_kinds": {"replied"}},
        {"free_mail_domains": "gmail.com"},
        {"free_mail_domains": ["gmail.com", ""]},
        {"free_mail_domains": [None]},
        {"org_domain": "example.com"},
    ],
)
def test_invalid_configuration_is_a_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Policy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("today", [dt.datetime(2027, 3, 1, tzinfo=dt.timezone.utc), "2027-03-01"])
def test_today_must_be_a_date(today: object) -> None:
    with pytest.raises(ConfigError):
        Policy().decide(_correlation(), today=today)  # type: ignore[arg-type]


# -- scope ----------------------------------------------------------------------------------------

ACCOUNT = Policy(scope=Scope.ACCOUNT)


def test_account_scope_for_a_reply_at_a_company_domain() -> None:
    decision = ACCOUNT.decide(_correlation(sent=_sent(to="jo@eu.mail.acme.co.uk")), today=TODAY)
    assert decision.scope is Scope.ACCOUNT
    assert decision.account_domain == "acme.co.uk"
    assert decision.reason.endswith("; account scope: acme.co.uk")


def test_account_scope_is_decided_by_the_prospect_not_the_responder() -> None:
    correlation = attrs.evolve(
        _correlation(role=Role.OTHER), responder=Address("Kim", "kim@gmail.com")
    )
    decision = ACCOUNT.decide(correlation, today=TODAY)
    assert (decision.scope, decision.account_domain) == (Scope.ACCOUNT, "customer.example")


@pytest.mark.parametrize(
    ("prospect", "note"),
    [
        ("jo@gmail.com", "gmail.com is free mail"),
        ("jo@yahoo.com.ar", "yahoo.com.ar is free mail"),
        ("jo@mail.hotmail.co.th", "mail.hotmail.co.th is free mail"),
        ("jo@co.uk", "co.uk has no organisational domain"),
    ],
)
def test_account_scope_falls_back_to_prospect(prospect: str, note: str) -> None:
    decision = ACCOUNT.decide(_correlation(sent=_sent(to=prospect)), today=TODAY)
    assert (decision.scope, decision.account_domain) == (Scope.PROSPECT, None)
    assert decision.action is STOP
    assert decision.reason.endswith(f"prospect scope: {note}")


def test_account_scope_without_stored_send_falls_back() -> None:
    decision = ACCOUNT.decide(_correlation(no_send=True), today=TODAY)
    assert decision.scope is Scope.PROSPECT
    assert "unknown" in decision.reason


def test_host_free_mail_list_is_used() -> None:
    policy = Policy(scope="account", free_mail_domains={"customer.example"})
    decision = policy.decide(_correlation(), today=TODAY)
    assert decision.scope is Scope.PROSPECT
    # Brand families still apply with a host list.
    decision = policy.decide(_correlation(sent=_sent(to="jo@gmx.ch")), today=TODAY)
    assert decision.scope is Scope.PROSPECT


@pytest.mark.parametrize(
    ("kind", "bounce", "return_date", "scope"),
    [
        (Kind.REPLY, None, None, Scope.ACCOUNT),
        (Kind.COMPLAINT, None, None, Scope.ACCOUNT),
        (Kind.BOUNCE, HARD, None, Scope.PROSPECT),  # one dead mailbox is not the company
        (Kind.OUT_OF_OFFICE, None, dt.date(2027, 3, 5), Scope.PROSPECT),
        (Kind.RECEIPT, None, None, Scope.PROSPECT),
    ],
)
def test_account_scope_applies_to_account_kinds(
    kind: Kind, bounce: Bounce | None, return_date: dt.date | None, scope: Scope
) -> None:
    correlation = _correlation(kind, bounce=bounce, return_date=return_date)
    assert ACCOUNT.decide(correlation, today=TODAY).scope is scope


def test_account_scope_never_widens_log_only() -> None:
    policy = Policy(scope=Scope.ACCOUNT, reply=LOG)
    assert policy.decide(_correlation(), today=TODAY).scope is Scope.PROSPECT


def test_account_kinds_and_org_domain_are_configurable() -> None:
    policy = Policy(
        scope=Scope.ACCOUNT,
        account_kinds={Kind.BOUNCE},
        org_domain=lambda domain: "customer-group.example",
    )
    hard = policy.decide(_correlation(Kind.BOUNCE, bounce=HARD), today=TODAY)
    assert (hard.scope, hard.account_domain) == (Scope.ACCOUNT, "customer-group.example")
    assert policy.decide(_correlation(), today=TODAY).scope is Scope.PROSPECT


# -- domains --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("acme.com", "acme.com"),
        ("mail.eu.acme.com", "acme.com"),
        ("ACME.com.", "acme.com"),
        ("sales.acme.co.uk", "acme.co.uk"),
        ("acme.com.au", "acme.com.au"),
        ("x.acme.co.jp", "acme.co.jp"),
        ("acme.com.br", "acme.com.br"),
        ("mx.acme.co.za", "acme.co.za"),
        ("acme.com.na", "acme.com.na"),  # generic second level under a ccTLD
        ("acme.de", "acme.de"),
        ("contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
        ("contoso.mail.onmicrosoft.com", "contoso.mail.onmicrosoft.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("co.uk", None),
        ("com.na", None),
        ("localhost", None),
        ("", None),
        (".", None),
        ("a..b", None),
        ("192.0.2.1", None),
        ("[192.0.2.1]", None),
    ],
)
def test_organisational_domain(domain: str, expected: str | None) -> None:
    assert organisational_domain(domain) == expected


@pytest.mark.parametrize(
    ("domain", "free"),
    [
        ("gmail.com", True),
        ("GoogleMail.com", True),
        ("jo@gmail.com", True),
        ("outlook.com", True),
        ("hotmail.de", True),
        ("hotmail.com.pe", True),  # not listed: the brand family decides
        ("live.com.au", True),
        ("yahoo.co.jp", True),
        ("ymail.com", True),
        ("icloud.com", True),
        ("gmx.net", True),
        ("web.de", True),
        ("t-online.de", True),
        ("mail.ru", True),
        ("yandex.ru", True),
        ("qq.com", True),
        ("163.com", True),
        ("naver.com", True),
        ("proton.me", True),
        ("protonmail.com", True),
        ("zoho.com", True),
        ("acme.com", False),
        ("live.nation.com", False),
        ("gmail.acme.com", False),
        ("mail.acme.co.uk", False),
        ("", False),
        ("localhost", False),
    ],
)
def test_is_free_mail(domain: str, free: bool) -> None:
    assert is_free_mail(domain) is free


def test_free_mail_list_is_lower_case_and_valid() -> None:
    assert all(d == d.lower().strip() for d in FREE_MAIL_DOMAINS)
    assert all(organisational_domain(d) is not None for d in FREE_MAIL_DOMAINS)
    assert len(FREE_MAIL_DOMAINS) > 300


@pytest.mark.parametrize("function", [organisational_domain, is_free_mail])
def test_domain_helpers_refuse_non_text(function: object) -> None:
    with pytest.raises(ConfigError):
        function(b"gmail.com")  # type: ignore[operator]
