"""The stack's global-traffic settings as the failover provider's plain inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefabric.config.models import NAMESPACE, ConfigError, StackConfig


def failover_spec(cfg: StackConfig, addresses: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's global-traffic settings as WeightedFailover's plain inputs.

    One projection for `GlobalTraffic` (where addresses may be Pulumi Inputs) and for the
    failover controller, so both publish exactly the same plan. `addresses` maps each
    enabled cloud to its ingress address. Backends are included without secrets: those
    stay references.
    """
    if cfg.dns is None:
        raise ConfigError([f"{NAMESPACE}:dns = None: global traffic needs the dns section"])
    strategy = cfg.strategies.get(cfg.dns.strategy)
    if strategy is None:
        raise ConfigError([f"{NAMESPACE}:dns.strategy = {cfg.dns.strategy!r}: a key of strategies"])
    endpoints: dict[str, dict[str, Any]] = {}
    for cloud in cfg.traffic_clouds:
        endpoint: dict[str, Any] = {"address": addresses[cloud]}
        ingress = cfg.clouds.get(cloud).ingress
        if ingress is not None and ingress.health_url:
            endpoint["health_url"] = ingress.health_url
        endpoints[cloud] = endpoint
    hc = cfg.health_check
    return {
        "record_name": cfg.dns.record_name,
        "ttl": cfg.dns.ttl,
        "endpoints": endpoints,
        "health_check": {
            "interval_s": hc.interval_s,
            "timeout_s": hc.timeout_s,
            "failure_threshold": hc.failure_threshold,
            "success_threshold": hc.success_threshold,
            "recovery_hold_down_s": hc.recovery_hold_down_s,
            "check": hc.check.model_dump(),
        },
        "strategy": {"order": list(strategy.order), "replication": strategy.replication,
                     "failover": strategy.failover},
        "routing": {"rules": [r.model_dump() for r in cfg.routing.rules],
                    "default_weight": cfg.routing.default_weight},
        "backends": {k: v for k, v in cfg.dns.backends.model_dump().items() if v is not None},
    }

