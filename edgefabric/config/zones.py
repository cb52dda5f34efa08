"""One authoritative zone per published name, and where every other backend publishes.

A name answered by two authoritative zones (say Route53 and Cloud DNS both hosting
`edgefabric.example.com.`) is answered by whichever zone the parent's NS records happen to
reach: the two never agree for long, and a failover written to one is invisible in the
other. So exactly one backend is the *authority* (`dns.authority`): its zone holds the
published names themselves. Every other backend that hosts a zone is a *secondary*:

- its zone is a subzone of the authority's, delegated by NS records the stack writes into
  the authority's zone (Cloud DNS `gcp.dev.example.com.` under Route53 `example.com.`);
- it publishes the same weighted answers under `<first label>.<its zone>`
  (`api.gcp.dev.example.com.`): a standby name that follows the same failover, ready to take
  the traffic with one CNAME if the authority's provider is down.

Traffic Manager answers only under `trafficmanager.net`, so the authority's zone CNAMEs
`<first label>.tm.<parent of the name>` (`api.tm.dev.example.com.`) to each profile.

Pure names only, here so that the config rules, the backends (`Secondary` in
`edgefabric.traffic.dns`) and the tier that creates the zones, delegations and CNAMEs
(`edgefabric.tiers.traffic`) agree on them.
"""

from __future__ import annotations

# The backends that host a DNS zone (a field of `dns.backends`); Traffic Manager does not.
ZONE_BACKENDS = ("route53", "gcp_dns", "powerdns")
# How the stack file spells each backend (`dns.authority` takes those of ZONE_BACKENDS).
CONFIG_KEYS = {"route53": "route53", "gcp_dns": "gcpDns", "powerdns": "powerdns", "azure_tm": "azureTm"}
# The label under the name's parent that holds the CNAMEs to Traffic Manager profiles.
TM_LABEL = "tm"
TM_DOMAIN = "trafficmanager.net."


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def first_label(name: str) -> str:
    return name.split(".", 1)[0]


def parent(name: str) -> str:
    """`api.dev.example.com.` -> `dev.example.com.`"""
    return _fqdn(name).split(".", 1)[1]


def within(name: str, zone: str) -> bool:
    """True when `name` is `zone` or below it."""
    name, zone = _fqdn(name), _fqdn(zone)
    return name == zone or name.endswith("." + zone)


def below(name: str, zone: str) -> bool:
    """True when `name` is strictly below `zone`."""
    return within(name, zone) and _fqdn(name) != _fqdn(zone)


def secondary_name(record: str, zone: str) -> str:
    """Where a secondary backend with `zone` publishes `record`: `<first label>.<zone>`."""
    return f"{first_label(record)}.{_fqdn(zone)}"


def tm_alias(record: str) -> str:
    """The name in the authority's zone that CNAMEs `record`'s Traffic Manager profile."""
    return f"{first_label(record)}.{TM_LABEL}.{parent(record)}"


def tm_target(relative_dns_name: str) -> str:
    """A Traffic Manager profile's own DNS name."""
    return f"{relative_dns_name}.{TM_DOMAIN}"
