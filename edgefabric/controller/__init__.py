"""The continuous failover controller: probe, plan, apply under a lease, notify."""
