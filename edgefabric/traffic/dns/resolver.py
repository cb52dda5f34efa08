"""Resolve an ingress's DNS name to the IPv4 addresses the backends publish.

An AWS load balancer reports a hostname, never an IP, while every backend answers the
global name with A records (Traffic Manager alone takes a name as an endpoint target). So
a name is resolved with dnspython on every probe round and at every apply, and each of its
addresses is probed and published.

The resolver is the system's (`/etc/resolv.conf`), or the one `resolver` names
(`host` or `host:port`, e.g. `127.0.0.1:18053`, the local PowerDNS): the spec's `resolver`
field, else the `EDGEFABRIC_RESOLVER` environment variable. A name that does not answer
with A records (NXDOMAIN, no A data, no server answering within the lifetime) resolves to
no address; callers treat that cloud as down for the round ("does not resolve").
"""

from __future__ import annotations

import ipaddress
import os

import dns.exception
import dns.name
import dns.resolver

RESOLVER_ENV = "EDGEFABRIC_RESOLVER"
# `host` or `host:port`, host an IPv4 address, or `[v6]` with an optional `:port`.
RESOLVER_PATTERN = r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\])(:\d{1,5})?$"


def parse_resolver(resolver: str) -> tuple[str, int]:
    """`127.0.0.1:18053` -> ("127.0.0.1", 18053); the port defaults to 53. ValueError when
    it is not an address (a resolver given by name would need a resolver itself)."""
    host, port = resolver, "53"
    if resolver.startswith("["):
        host, _, rest = resolver[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif resolver.count(":") == 1:
        host, port = resolver.split(":")
    ipaddress.ip_address(host)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r}: 1..65535")
    return host, int(port)


def resolver_address(configured: str | None = None) -> str | None:
    """The resolver to ask: `configured` (the spec's), else `EDGEFABRIC_RESOLVER`, else None
    (the system's)."""
    return configured or os.environ.get(RESOLVER_ENV) or None


def resolve_a(name: str, resolver: str | None = None, lifetime_s: float = 5.0) -> tuple[str, ...]:
    """The IPv4 addresses `name` answers with (CNAMEs followed), sorted; () when it does not
    resolve. `resolver`: `host[:port]` to ask instead of the system's resolver."""
    if resolver:
        host, port = parse_resolver(resolver)
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [host]
        r.port = port
    else:
        try:
            r = dns.resolver.Resolver()
        except dns.exception.DNSException:  # no resolv.conf, or no nameserver in it
            return ()
    r.lifetime = lifetime_s
    r.timeout = lifetime_s
    try:
        # Fully qualified, no search domains: the name is the load balancer's, as reported.
        answer = r.resolve(dns.name.from_text(name), "A", search=False)
    except dns.exception.DNSException:
        return ()
    return tuple(sorted({rdata.address for rdata in answer}, key=ipaddress.IPv4Address))
