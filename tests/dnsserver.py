"""A small authoritative DNS server for tests, built with dnspython.

It answers UDP queries on 127.0.0.1 from records held in memory, counts every query it
receives, and can be told to misbehave for a name: answer SERVFAIL or REFUSED, or drop the
query so that the client times out. It never recurses and never touches the network beyond
its loopback socket, so a resolver pointed at it (see `DNSServer.resolver`) cannot reach the
internet.

    with DNSServer({"example.com": {"MX": ["10 aspmx.l.google.com."]}}) as server:
        resolver = server.resolver()
        ...
        assert server.count("example.com", "MX") == 1

Names are given without the trailing dot and matched case-insensitively. A name absent from
the records is NXDOMAIN; a name present without the queried type is NOERROR with an empty
answer (NODATA), with the zone's SOA in the authority section as RFC 2308 describes.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

__all__ = ["Behaviour", "DNSServer"]

Behaviour = Literal["servfail", "refused", "drop"]

Records = Mapping[str, Mapping[str, Sequence[str]]]


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DNSServer:
    """An authoritative UDP DNS server on a free loopback port, run in a daemon thread.

    Args:
        records: ``{name: {rdtype: [rdata text, ...]}}``, for example
            ``{"example.com": {"MX": ["10 mx.example.com."], "TXT": ['"v=spf1 -all"']}}``.
        ttl: the TTL of every record, unless `add` gives another.
    """

    def __init__(self, records: Records | None = None, *, ttl: int = 300) -> None:
        self._lock = threading.Lock()
        self._rrsets: dict[str, dict[str, tuple[int, tuple[str, ...]]]] = {}
        self._behaviour: dict[tuple[str, str | None], Behaviour] = {}
        self._queries: list[tuple[str, str]] = []
        self._ttl = ttl
        for name, types in (records or {}).items():
            for rdtype, values in types.items():
                self.add(name, rdtype, values)
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None

    # -- configuration (safe to call while running) ----------------------------------------

    def add(
        self, name: str, rdtype: str, values: Iterable[str], *, ttl: int | None = None
    ) -> None:
        """Set the records of one type at *name* (replacing any), with an optional TTL."""
        values = tuple(values)
        # Parse now, so a typo fails in the test rather than in the server thread.
        for value in values:
            dns.rrset.from_text(f"{_key(name)}.", 1, "IN", rdtype, value)
        with self._lock:
            self._rrsets.setdefault(_key(name), {})[rdtype.upper()] = (
                self._ttl if ttl is None else ttl,
                values,
            )

    def add_name(self, name: str) -> None:
        """Make *name* exist with no records (queries get NODATA instead of NXDOMAIN)."""
        with self._lock:
            self._rrsets.setdefault(_key(name), {})

    def misbehave(
        self, name: str, behaviour: Behaviour | None, *, rdtype: str | None = None
    ) -> None:
        """Answer queries for *name* with SERVFAIL or REFUSED, or drop them; ``None`` heals.

        With *rdtype*, only queries of that type misbehave.
        """
        key = (_key(name), None if rdtype is None else rdtype.upper())
        with self._lock:
            if behaviour is None:
                self._behaviour.pop(key, None)
            else:
                self._behaviour[key] = behaviour

    # -- observation ----------------------------------------------------------------------

    @property
    def queries(self) -> list[tuple[str, str]]:
        """Every query received so far, as ``(name, rdtype)``, in order."""
        with self._lock:
            return list(self._queries)

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """How many queries were received, optionally only for *name* and/or *rdtype*."""
        return sum(
            1
            for qname, qtype in self.queries
            if (name is None or qname == _key(name)) and (rdtype is None or qtype == rdtype)
        )

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The UDP port the server listens on (127.0.0.1)."""
        if self._sock is None:
            raise RuntimeError("the DNS server is not running")
        port: int = self._sock.getsockname()[1]
        return port

    def resolver(self, *, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A resolver that asks this server only: never the system configuration."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.timeout = timeout
        resolver.lifetime = timeout
        return resolver

    def start(self) -> DNSServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="test-dns-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close the sockets; safe to call twice."""
        if self._thread is not None:
            self._wake_w.send(b"x")
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                raise RuntimeError("the DNS server thread did not stop")
            self._thread = None
        if self._sock is not None:
            self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the server thread -----------------------------------------------------------------

    def _serve(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        data, peer = self._sock.recvfrom(65535)
                    except BlockingIOError:
                        continue
                    reply = self._answer(data)
                    if reply is not None:
                        self._sock.sendto(reply, peer)

    def _answer(self, data: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except Exception:  # a test server ignores garbage, as real ones do
            return None
        if len(query.question) != 1:
            return None
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self._queries.append((name, rdtype))
            behaviour = self._behaviour.get((name, rdtype), self._behaviour.get((name, None)))
            node = self._rrsets.get(name)
            found = None if node is None else node.get(rdtype)
        if behaviour == "drop":
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if behaviour == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif behaviour == "refused":
            response.set_rcode(dns.rcode.REFUSED)
        elif node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa(name))
        elif found is None:
            response.authority.append(self._soa(name))
        else:
            ttl, values = found
            response.answer.append(
                dns.rrset.from_text_list(question.name, ttl, "IN", rdtype, list(values))
            )
        return response.to_wire()

    def _soa(self, name: str) -> dns.rrset.RRset:
        # One fake zone per name is enough for a resolver: it only reads the negative TTL.
        owner = dns.name.from_text(name or ".")
        return dns.rrset.from_text(
            owner, 60, "IN", "SOA", "ns.test. hostmaster.test. 1 3600 600 86400 60"
        )
