"""replytrack.dns provider detection, against a real DNS server on the loopback interface.

Every resolver here comes from `DNSServer.resolver` (``configure=False``, one nameserver:
127.0.0.1 on the server's port), so no test reads the system configuration or reaches the
internet.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator

import dns.exception
import dns.resolver
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replytrack.dns
from dnsserver import DNSServer
from replytrack.dns import (
    DNSError,
    MailRoute,
    Provider,
    ProviderDetector,
    ProviderInfo,
    detect_provider,
)
from replytrack.errors import ConfigError, ReplytrackError


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server() -> Iterator[DNSServer]:
    with DNSServer() as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def detector(server: DNSServer, clock: FakeClock) -> ProviderDetector:
    return ProviderDetector(server.resolver(timeout=1.0), timeout=1.0, clock=clock)


def mx(server: DNSServer, domain: str, *hosts: str, ttl: int | None = None) -> None:
    """Publish MX records ("10 host.") for *domain*."""
    server.add(domain, "MX", hosts, ttl=ttl)


# -- providers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        pytest.param("aspmx.l.google.com", Provider.GOOGLE, id="google-workspace"),
        pytest.param("alt1.aspmx.l.google.com", Provider.GOOGLE, id="google-alt"),
        pytest.param("smtp.google.com", Provider.GOOGLE, id="google-single-mx"),
        pytest.param("gmail-smtp-in.l.google.com", Provider.GOOGLE, id="gmail"),
        pytest.param("aspmx2.googlemail.com", Provider.GOOGLE, id="googlemail"),
        pytest.param(
            "contoso-com.mail.protection.outlook.com", Provider.MICROSOFT, id="exchange-online"
        ),
        pytest.param(
            "hotmail-com.olc.protection.outlook.com", Provider.MICROSOFT, id="outlook-consumer"
        ),
        pytest.param("contoso-com.o-v1.mx.microsoft", Provider.MICROSOFT, id="exchange-dnssec"),
        pytest.param("mx1.hotmail.com", Provider.MICROSOFT, id="hotmail-legacy"),
        pytest.param(
            "contoso-com.mail.protection.partner.outlook.cn", Provider.MICROSOFT, id="21vianet"
        ),
        pytest.param(
            "contoso-com.mail.protection.office365.us", Provider.MICROSOFT, id="gcc-high"
        ),
        pytest.param("mta5.am0.yahoodns.net", Provider.YAHOO, id="yahoo"),
        pytest.param("mx-aol.mail.gm0.yahoodns.net", Provider.YAHOO, id="aol"),
        pytest.param("mx.zoho.com", Provider.ZOHO, id="zoho"),
        pytest.param("mx2.zoho.eu", Provider.ZOHO, id="zoho-eu"),
        pytest.param("mx.zoho.in", Provider.ZOHO, id="zoho-in"),
        pytest.param("mx.zoho.com.au", Provider.ZOHO, id="zoho-au"),
        pytest.param("mx.zohocloud.ca", Provider.ZOHO, id="zoho-ca"),
        pytest.param("mail.example.net", Provider.OTHER, id="self-hosted"),
    ],
)
def test_primary_mx_names_the_provider(
    server: DNSServer, detector: ProviderDetector, host: str, provider: Provider
) -> None:
    mx(server, "example.com", f"10 {host}.")
    info = detector.detect("example.com")
    assert info.provider is provider
    assert info.route is MailRoute.MX
    assert info.mx_hosts == (host,)
    assert info.gateway is None
    assert not info.inferred


def test_host_names_are_matched_case_insensitively(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 ASPMX.L.Google.COM.")
    info = detector.detect("example.com")
    assert info.provider is Provider.GOOGLE
    assert info.mx_hosts == ("aspmx.l.google.com",)


@pytest.mark.parametrize(
    ("provider", "adapter"),
    [
        (Provider.GOOGLE, "gmail"),
        (Provider.MICROSOFT, "graph"),
        (Provider.YAHOO, "imap"),
        (Provider.ZOHO, "imap"),
        (Provider.OTHER, "imap"),
        (Provider.NONE, None),
    ],
)
def test_adapter_hint_follows_the_provider(provider: Provider, adapter: str | None) -> None:
    info = ProviderInfo("example.com", provider, MailRoute.MX)
    assert info.adapter == adapter


def test_reasons_cite_the_mail_host(server: DNSServer, detector: ProviderDetector) -> None:
    mx(server, "example.com", "10 mx.zoho.com.")
    (reason,) = detector.detect("example.com").reasons
    assert "mx.zoho.com" in reason
    assert "Zoho" in reason


# -- label-suffix matching -------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil-google.com.attacker.net",
        "google.com.attacker.net",
        "aspmx.l.google.com.attacker.net",
        "notgoogle.com",
        "google.co",
        "outlook.com-mail.example",
        "mail.protection.outlook.com.example",
        "zoho.com.example",
        "mimecast.com.example",
        "pphosted.com.evil",
    ],
)
def test_provider_names_inside_other_domains_do_not_match(
    server: DNSServer, detector: ProviderDetector, host: str
) -> None:
    mx(server, "example.com", f"10 {host}.")
    info = detector.detect("example.com")
    assert info.provider is Provider.OTHER
    assert info.gateway is None


def test_escaped_dot_inside_one_label_does_not_match(
    server: DNSServer, detector: ProviderDetector
) -> None:
    r"""``google\.com.`` is one label holding a dot, not the domain google.com."""
    mx(server, "example.com", "10 google\\.com.")
    assert detector.detect("example.com").provider is Provider.OTHER


def test_mx_and_gateway_tables_share_no_suffix() -> None:
    """The lookup merges the two tables, so a shared suffix would silently drop one."""
    assert not set(replytrack.dns._PROVIDER_MX) & set(replytrack.dns._GATEWAY_MX)


# -- several MX records ------------------------------------------------------------------------


def test_mx_hosts_are_ordered_by_preference(server: DNSServer, detector: ProviderDetector) -> None:
    mx(
        server,
        "example.com",
        "30 backup.example.net.",
        "5 aspmx.l.google.com.",
        "20 alt2.aspmx.l.google.com.",
        "20 alt1.aspmx.l.google.com.",
    )
    info = detector.detect("example.com")
    assert info.mx_hosts == (
        "aspmx.l.google.com",
        "alt1.aspmx.l.google.com",
        "alt2.aspmx.l.google.com",
        "backup.example.net",
    )


def test_the_most_preferred_mx_decides(server: DNSServer, detector: ProviderDetector) -> None:
    """A backup MX at another provider (a migration, a fallback) does not change the answer."""
    mx(server, "example.com", "20 contoso-com.mail.protection.outlook.com.", "10 smtp.google.com.")
    assert detector.detect("example.com").provider is Provider.GOOGLE


def test_unknown_primary_is_other_even_with_a_provider_backup(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 mail.example.com.", "20 smtp.google.com.")
    assert detector.detect("example.com").provider is Provider.OTHER


def test_equal_preference_hosts_of_one_provider_agree(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 mx.zoho.com.", "10 mx2.zoho.com.")
    assert detector.detect("example.com").provider is Provider.ZOHO


def test_equal_preference_hosts_of_two_providers_give_other(
    server: DNSServer, detector: ProviderDetector
) -> None:
    """Senders spread mail over equal preferences, so neither provider holds every mailbox."""
    mx(server, "example.com", "10 smtp.google.com.", "10 contoso-com.mail.protection.outlook.com.")
    info = detector.detect("example.com")
    assert info.provider is Provider.OTHER
    assert any("disagree" in reason for reason in info.reasons)


def test_equal_preference_provider_and_unknown_host_give_other(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 smtp.google.com.", "10 mail.example.com.")
    assert detector.detect("example.com").provider is Provider.OTHER


# -- security gateways -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "gateway"),
    [
        ("eu-smtp-inbound-1.mimecast.com", "mimecast"),
        ("za-smtp-inbound-1.mimecast.co.za", "mimecast"),
        ("mx0a-00123401.pphosted.com", "proofpoint"),
        ("mx1-us1.ppe-hosted.com", "proofpoint"),
        ("d123456a.ess.barracudanetworks.com", "barracuda"),
        ("mx1.hc1234-56.iphmx.com", "cisco"),
        ("cluster1.eu.messagelabs.com", "symantec"),
        ("cluster-a.mailcontrol.com", "forcepoint"),
        ("example-com.in.tmes.trendmicro.com", "trendmicro"),
        ("mx-01-eu-central-1.prod.hydra.sophos.com", "sophos"),
        ("mx-cluster1.hornetsecurity.com", "hornetsecurity"),
        ("mx.eu1.antispamcloud.com", "spamexperts"),
    ],
)
def test_gateway_mx_is_named_and_hides_the_provider(
    server: DNSServer, detector: ProviderDetector, host: str, gateway: str
) -> None:
    mx(server, "example.com", f"10 {host}.")
    info = detector.detect("example.com")
    assert info.provider is Provider.OTHER
    assert info.gateway == gateway
    assert info.adapter == "imap"
    assert not info.inferred


def test_backup_mx_reveals_the_provider_behind_a_gateway(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(
        server,
        "example.com",
        "10 eu-smtp-inbound-1.mimecast.com.",
        "10 eu-smtp-inbound-2.mimecast.com.",
        "20 contoso-com.mail.protection.outlook.com.",
    )
    info = detector.detect("example.com")
    assert info.provider is Provider.MICROSOFT
    assert info.gateway == "mimecast"
    assert info.inferred
    assert server.count(rdtype="TXT") == 0


@pytest.mark.parametrize(
    ("spf", "provider"),
    [
        pytest.param('"v=spf1 include:_spf.google.com ~all"', Provider.GOOGLE, id="google"),
        pytest.param(
            '"v=spf1 ip4:192.0.2.0/24 include:spf.protection.outlook.com -all"',
            Provider.MICROSOFT,
            id="microsoft",
        ),
        pytest.param('"v=spf1 include:zoho.eu ~all"', Provider.ZOHO, id="zoho"),
        pytest.param('"v=spf1 redirect=_spf.google.com"', Provider.GOOGLE, id="redirect"),
        pytest.param('"V=SPF1 +Include:_SPF.Google.com. ~all"', Provider.GOOGLE, id="case"),
        pytest.param(
            '"v=spf1 include:_spf.go" "ogle.com ~all"', Provider.GOOGLE, id="split-strings"
        ),
    ],
)
def test_spf_reveals_the_provider_behind_a_gateway(
    server: DNSServer, detector: ProviderDetector, spf: str, provider: Provider
) -> None:
    mx(server, "example.com", "10 mx0a-00123401.pphosted.com.")
    server.add("example.com", "TXT", ['"google-site-verification=abc"', spf])
    info = detector.detect("example.com")
    assert info.provider is provider
    assert info.gateway == "proofpoint"
    assert info.inferred
    assert server.count("example.com", "TXT") == 1


@pytest.mark.parametrize(
    "records",
    [
        pytest.param(
            ['"v=spf1 include:_spf.google.com include:spf.protection.outlook.com ~all"'],
            id="two-providers",
        ),
        pytest.param(['"v=spf1 -include:_spf.google.com ~all"'], id="fail-qualifier"),
        pytest.param(
            ['"v=spf1 include:_spf.google.com ~all"', '"v=spf1 -all"'], id="two-spf-records"
        ),
        pytest.param(['"v=spf10 include:_spf.google.com"'], id="not-spf"),
        pytest.param(['"v=spf1 include:_spf.google.com.attacker.net ~all"'], id="suffix"),
        pytest.param([], id="no-txt"),
    ],
)
def test_spf_without_one_clear_provider_reveals_nothing(
    server: DNSServer, detector: ProviderDetector, records: list[str]
) -> None:
    mx(server, "example.com", "10 eu-smtp-inbound-1.mimecast.com.")
    if records:
        server.add("example.com", "TXT", records)
    info = detector.detect("example.com")
    assert info.provider is Provider.OTHER
    assert info.gateway == "mimecast"
    assert not info.inferred


def test_spf_fallback_can_be_turned_off(server: DNSServer) -> None:
    mx(server, "example.com", "10 eu-smtp-inbound-1.mimecast.com.")
    server.add("example.com", "TXT", ['"v=spf1 include:_spf.google.com ~all"'])
    detector = ProviderDetector(server.resolver(), spf_fallback=False)
    assert detector.detect("example.com").provider is Provider.OTHER
    assert server.count(rdtype="TXT") == 0


def test_spf_is_not_read_when_the_provider_is_known(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    detector.detect("example.com")
    assert server.queries == [("example.com", "MX")]


def test_failed_spf_lookup_degrades_instead_of_failing(
    server: DNSServer, detector: ProviderDetector, clock: FakeClock
) -> None:
    """The MX answer stands; the degraded result is cached for the negative TTL only."""
    mx(server, "example.com", "10 eu-smtp-inbound-1.mimecast.com.", ttl=3600)
    server.misbehave("example.com", "servfail", rdtype="TXT")
    info = detector.detect("example.com")
    assert info.provider is Provider.OTHER
    assert info.gateway == "mimecast"
    assert any("SPF" in reason for reason in info.reasons)
    clock.advance(300)
    detector.detect("example.com")
    assert server.count("example.com", "MX") == 2


def test_timed_out_spf_lookup_stays_within_the_time_limit(server: DNSServer) -> None:
    mx(server, "example.com", "10 eu-smtp-inbound-1.mimecast.com.")
    server.misbehave("example.com", "drop", rdtype="TXT")
    detector = ProviderDetector(server.resolver(timeout=0.3), timeout=0.3)
    started = time.monotonic()
    info = detector.detect("example.com")
    assert time.monotonic() - started < 0.3 + 0.5
    assert info.gateway == "mimecast"
    assert any("timed out" in reason for reason in info.reasons)


# -- input ------------------------------------------------------------------------------------


def test_email_address_is_looked_up_by_its_domain(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    info = detector.detect("Jo.Smith+sales@Example.COM")
    assert info.domain == "example.com"
    assert info.provider is Provider.GOOGLE
    assert server.queries == [("example.com", "MX")]


def test_quoted_local_part_may_contain_an_at_sign(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    assert detector.detect('"jo@home"@example.com').domain == "example.com"


def test_unicode_local_part_is_accepted(server: DNSServer, detector: ProviderDetector) -> None:
    """RFC 6532 allows UTF-8 local parts."""
    mx(server, "example.com", "10 smtp.google.com.")
    assert detector.detect("jörg@example.com").provider is Provider.GOOGLE


def test_unicode_domain_is_looked_up_as_its_a_label(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "xn--bcher-kva.example", "10 mx.zoho.eu.")
    info = detector.detect("jo@Bücher.example")
    assert info.domain == "xn--bcher-kva.example"
    assert info.provider is Provider.ZOHO
    assert server.queries == [("xn--bcher-kva.example", "MX")]


def test_trailing_dot_is_accepted(server: DNSServer, detector: ProviderDetector) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    assert detector.detect("example.com.").domain == "example.com"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Jo <jo@example.com>", id="display-name"),
        pytest.param("<jo@example.com>", id="angle-brackets"),
        pytest.param("jo@example.com, al@example.com", id="list"),
        pytest.param("Jo jo@example.com", id="space-in-local-part"),
        pytest.param("@example.com", id="empty-local-part"),
        pytest.param("jo..smith@example.com", id="empty-atom"),
        pytest.param('"jo"x"@example.com', id="bad-quoted-string"),
        pytest.param("jo@", id="empty-domain"),
        pytest.param("jo@[192.0.2.1]", id="address-literal"),
        pytest.param("jo@-bad.com", id="bad-domain"),
        pytest.param("jo@straße.de", id="idna-deviation"),
        pytest.param("", id="empty"),
        pytest.param(" example.com", id="leading-space"),
        pytest.param("example.com\r\nX: y", id="crlf"),
        pytest.param("a_b.example.com", id="underscore"),
    ],
)
def test_input_that_is_not_an_address_or_domain_is_a_config_error(
    server: DNSServer, detector: ProviderDetector, value: str
) -> None:
    with pytest.raises(ConfigError):
        detector.detect(value)
    assert server.count() == 0


@pytest.mark.parametrize("value", [None, b"example.com", 42])
def test_non_str_input_is_a_config_error(detector: ProviderDetector, value: object) -> None:
    with pytest.raises(ConfigError, match="email address or a domain"):
        detector.detect(value)  # type: ignore[arg-type]


# -- no mail -----------------------------------------------------------------------------------


def test_null_mx_means_no_mail(server: DNSServer, detector: ProviderDetector) -> None:
    mx(server, "example.com", "0 .")
    info = detector.detect("jo@example.com")
    assert info.provider is Provider.NONE
    assert info.route is MailRoute.NULL_MX
    assert info.mx_hosts == ()
    assert info.adapter is None


def test_null_mx_beside_real_mx_is_ignored(server: DNSServer, detector: ProviderDetector) -> None:
    """RFC 7505 §3 forbids the mix; senders still deliver to the real host."""
    mx(server, "example.com", "0 .", "10 smtp.google.com.")
    info = detector.detect("example.com")
    assert info.provider is Provider.GOOGLE
    assert info.mx_hosts == ("smtp.google.com",)


def test_domain_without_mx_but_with_an_address_is_its_own_mail_host(
    server: DNSServer, detector: ProviderDetector
) -> None:
    server.add("example.com", "A", ["192.0.2.1"])
    info = detector.detect("example.com")
    assert info.route is MailRoute.IMPLICIT_MX
    assert info.provider is Provider.OTHER
    assert info.mx_hosts == ("example.com",)
    assert server.queries == [("example.com", "MX"), ("example.com", "A")]


def test_implicit_mx_from_an_ipv6_address(server: DNSServer, detector: ProviderDetector) -> None:
    server.add("example.com", "AAAA", ["2001:db8::1"])
    info = detector.detect("example.com")
    assert info.route is MailRoute.IMPLICIT_MX
    assert server.queries == [
        ("example.com", "MX"),
        ("example.com", "A"),
        ("example.com", "AAAA"),
    ]


def test_domain_without_mx_or_address_has_no_mail_host(
    server: DNSServer, detector: ProviderDetector
) -> None:
    server.add("example.com", "TXT", ['"v=spf1 -all"'])
    info = detector.detect("example.com")
    assert info.provider is Provider.NONE
    assert info.route is MailRoute.NO_MAIL_HOST
    assert info.adapter is None


def test_nonexistent_domain_is_an_answer_not_an_error(
    server: DNSServer, detector: ProviderDetector
) -> None:
    info = detector.detect("jo@no-such-domain.example")
    assert info.provider is Provider.NONE
    assert info.route is MailRoute.NXDOMAIN
    assert info.domain == "no-such-domain.example"
    assert "NXDOMAIN" in info.reasons[0]


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["servfail", "refused"])
def test_server_failure_is_a_dns_error(
    server: DNSServer, detector: ProviderDetector, behaviour: str
) -> None:
    server.misbehave("example.com", behaviour)  # type: ignore[arg-type]
    with pytest.raises(DNSError) as info:
        detector.detect("jo@example.com")
    assert info.value.domain == "example.com"
    assert not info.value.timeout
    assert isinstance(info.value.__cause__, dns.resolver.NoNameservers)
    assert not isinstance(info.value, dns.exception.DNSException)
    assert isinstance(info.value, ReplytrackError)


def test_unanswered_query_times_out_within_the_limit(server: DNSServer) -> None:
    server.misbehave("example.com", "drop")
    detector = ProviderDetector(server.resolver(timeout=0.3), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DNSError, match="timed out") as info:
        detector.detect("example.com")
    # dnspython sleeps a 0.1 s back-off before it notices the deadline (Rule 5).
    assert time.monotonic() - started < 0.3 + 0.5
    assert info.value.timeout
    assert isinstance(info.value.__cause__, dns.exception.Timeout)


def test_queries_share_one_time_limit(server: DNSServer) -> None:
    """An implicit-MX lookup makes several queries; together they stay within the limit."""
    server.add_name("example.com")
    server.misbehave("example.com", "drop", rdtype="A")
    detector = ProviderDetector(server.resolver(timeout=0.3), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DNSError) as info:
        detector.detect("example.com")
    assert time.monotonic() - started < 0.3 + 0.5
    assert info.value.timeout
    assert server.count(rdtype="AAAA") == 0


def test_errors_are_not_cached(server: DNSServer, detector: ProviderDetector) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    server.misbehave("example.com", "servfail")
    with pytest.raises(DNSError):
        detector.detect("example.com")
    server.misbehave("example.com", None)
    assert detector.detect("example.com").provider is Provider.GOOGLE


def test_missing_system_configuration_is_a_dns_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_configuration() -> dns.resolver.Resolver:
        raise dns.resolver.NoResolverConfiguration

    monkeypatch.setattr(dns.resolver, "Resolver", no_configuration)
    with pytest.raises(DNSError, match="system DNS configuration") as info:
        ProviderDetector().detect("example.com")
    assert isinstance(info.value.__cause__, dns.resolver.NoResolverConfiguration)


def test_dns_error_survives_pickling(server: DNSServer, detector: ProviderDetector) -> None:
    server.misbehave("example.com", "servfail")
    with pytest.raises(DNSError) as info:
        detector.detect("example.com")
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is DNSError
    assert str(copy) == str(info.value)
    assert copy.domain == "example.com"
    assert copy.timeout is False


def test_the_resolver_is_not_modified(server: DNSServer) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    resolver = server.resolver(timeout=2.0)
    ProviderDetector(resolver, timeout=0.5).detect("example.com")
    assert resolver.lifetime == 2.0
    assert resolver.timeout == 2.0


# -- cache -------------------------------------------------------------------------------------


def test_second_lookup_is_served_from_the_cache(
    server: DNSServer, detector: ProviderDetector
) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    first = detector.detect("jo@example.com")
    assert detector.detect("EXAMPLE.com.") is first
    assert detector.detect("al@example.com") is first
    assert server.count() == 1


def test_cached_result_expires_with_the_record_ttl(
    server: DNSServer, detector: ProviderDetector, clock: FakeClock
) -> None:
    mx(server, "example.com", "10 smtp.google.com.", ttl=60)
    detector.detect("example.com")
    clock.advance(59)
    detector.detect("example.com")
    assert server.count() == 1
    clock.advance(1)
    detector.detect("example.com")
    assert server.count() == 2


def test_long_record_ttl_is_capped(server: DNSServer, clock: FakeClock) -> None:
    mx(server, "example.com", "10 smtp.google.com.", ttl=86400)
    detector = ProviderDetector(server.resolver(), max_ttl=100, clock=clock)
    detector.detect("example.com")
    clock.advance(99)
    detector.detect("example.com")
    assert server.count() == 1
    clock.advance(1)
    detector.detect("example.com")
    assert server.count() == 2


def test_spf_ttl_shortens_an_inferred_result(
    server: DNSServer, detector: ProviderDetector, clock: FakeClock
) -> None:
    mx(server, "example.com", "10 eu-smtp-inbound-1.mimecast.com.", ttl=3600)
    server.add("example.com", "TXT", ['"v=spf1 include:_spf.google.com ~all"'], ttl=120)
    detector.detect("example.com")
    clock.advance(120)
    detector.detect("example.com")
    assert server.count("example.com", "MX") == 2


def test_nonexistent_domain_is_cached_for_the_negative_ttl(
    server: DNSServer, clock: FakeClock
) -> None:
    detector = ProviderDetector(server.resolver(), negative_ttl=30, clock=clock)
    detector.detect("nowhere.example")
    clock.advance(29)
    detector.detect("nowhere.example")
    assert server.count() == 1
    clock.advance(1)
    detector.detect("nowhere.example")
    assert server.count() == 2


def test_implicit_mx_is_cached_for_the_negative_ttl_at_most(
    server: DNSServer, clock: FakeClock
) -> None:
    """The absence of MX records is itself a negative answer (RFC 2308)."""
    server.add("example.com", "A", ["192.0.2.1"], ttl=3600)
    detector = ProviderDetector(server.resolver(), negative_ttl=30, clock=clock)
    detector.detect("example.com")
    clock.advance(30)
    detector.detect("example.com")
    assert server.count("example.com", "MX") == 2


def test_null_mx_is_cached_with_its_record_ttl(server: DNSServer, clock: FakeClock) -> None:
    mx(server, "example.com", "0 .", ttl=600)
    detector = ProviderDetector(server.resolver(), negative_ttl=30, clock=clock)
    detector.detect("example.com")
    clock.advance(599)
    detector.detect("example.com")
    assert server.count() == 1


def test_zero_ttl_is_not_cached(server: DNSServer, detector: ProviderDetector) -> None:
    mx(server, "example.com", "10 smtp.google.com.", ttl=0)
    detector.detect("example.com")
    detector.detect("example.com")
    assert server.count() == 2


def test_cache_evicts_the_least_recently_used_domain(server: DNSServer) -> None:
    for domain in ("a.example", "b.example", "c.example"):
        mx(server, domain, "10 smtp.google.com.")
    detector = ProviderDetector(server.resolver(), cache_size=2)
    detector.detect("a.example")
    detector.detect("b.example")
    detector.detect("a.example")  # a is now the most recently used
    detector.detect("c.example")  # evicts b
    detector.detect("a.example")
    assert server.count("a.example") == 1
    detector.detect("b.example")
    assert server.count("b.example") == 2


def test_cache_size_zero_disables_the_cache(server: DNSServer) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    detector = ProviderDetector(server.resolver(), cache_size=0)
    detector.detect("example.com")
    detector.detect("example.com")
    assert server.count() == 2


def test_clear_cache_forgets_everything(server: DNSServer, detector: ProviderDetector) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    detector.detect("example.com")
    detector.clear_cache()
    detector.detect("example.com")
    assert server.count() == 2


def test_concurrent_lookups_are_consistent(server: DNSServer) -> None:
    """Smoke test: threads sharing a small cache see correct answers and no exception."""
    expected = {
        "g.example": Provider.GOOGLE,
        "m.example": Provider.MICROSOFT,
        "z.example": Provider.ZOHO,
        "y.example": Provider.YAHOO,
        "o.example": Provider.OTHER,
    }
    hosts = {
        Provider.GOOGLE: "smtp.google.com.",
        Provider.MICROSOFT: "x.mail.protection.outlook.com.",
        Provider.ZOHO: "mx.zoho.com.",
        Provider.YAHOO: "mta5.am0.yahoodns.net.",
        Provider.OTHER: "mail.example.net.",
    }
    for domain, provider in expected.items():
        mx(server, domain, f"10 {hosts[provider]}")
    detector = ProviderDetector(server.resolver(), cache_size=3)
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            domains = list(expected)
            for i in range(40):
                domain = domains[(i + offset) % len(domains)]
                assert detector.detect(f"rep{i}@{domain}").provider is expected[domain]
        except BaseException as exc:  # collected, then asserted empty
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"timeout": True},
        {"timeout": "5"},
        {"cache_size": -1},
        {"cache_size": 1.5},
        {"max_ttl": -1},
        {"negative_ttl": float("inf")},
    ],
)
def test_bad_detector_arguments_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ProviderDetector(**kwargs)  # type: ignore[arg-type]


def test_detect_provider_uses_the_process_wide_detector(
    server: DNSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mx(server, "example.com", "10 smtp.google.com.")
    monkeypatch.setattr(replytrack.dns, "_default_detector", ProviderDetector(server.resolver()))
    assert detect_provider("jo@example.com").provider is Provider.GOOGLE


def test_detect_provider_refuses_bad_input_before_any_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No resolver is built (so the system configuration is never read) for bad input."""
    monkeypatch.setattr(replytrack.dns, "_default_detector", None)
    with pytest.raises(ConfigError):
        detect_provider("not an address")
    default = replytrack.dns._default_detector
    assert default is not None
    assert default._resolver is None


# -- no dnspython exception escapes -------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[DNSServer]:
    with DNSServer({"example.com": {"MX": ["10 smtp.google.com."]}}) as running:
        running.misbehave("servfail.example", "servfail")
        yield running


_DOMAINISH = st.text(alphabet='ab.-@_xü"\\ [] \u3002ß', max_size=30)


@settings(max_examples=150, deadline=None)
@given(value=st.one_of(st.text(max_size=40), _DOMAINISH))
def test_only_replytrack_errors_escape(shared_server: DNSServer, value: str) -> None:
    detector = ProviderDetector(shared_server.resolver(timeout=0.5), timeout=0.5, cache_size=0)
    try:
        info = detector.detect(value)
    except (ConfigError, DNSError):
        return  # anything else, a dns.* exception in particular, fails the test
    assert isinstance(info, ProviderInfo)
    assert info.domain.isascii()


@pytest.mark.parametrize(
    "value", ["jo@example.com", "jo@servfail.example", "jo@nowhere.example", "jo@@x"]
)
def test_only_replytrack_errors_escape_for_known_cases(
    shared_server: DNSServer, value: str
) -> None:
    detector = ProviderDetector(shared_server.resolver(), cache_size=0)
    try:
        detector.detect(value)
    except (ConfigError, DNSError):
        return  # anything else, a dns.* exception in particular, fails the test
