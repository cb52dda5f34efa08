"""edgefabric: a four-tier multi-cloud edge platform as a Pulumi (Python) program.

Packages, and the one direction their imports point
(`tiers` -> `dynamic` -> `chain`, `traffic` -> `config` -> `errors`):

- `config`      the typed stack config: models, cross-field rules, loading, vocabularies
- `errors`      the one user-error type; `secrets` the one secret-reference resolver
- `chain`       engine-free web3 client and ServiceRegistry client (what the agent ships)
- `traffic`     engine-free failover: probes, hysteresis, planner, DNS backends, the spec
- `controller`  the continuous failover loop: its lease, state, metrics and notifications
- `dynamic`     the Pulumi dynamic resources, thin adapters over `chain` and `traffic`
- `tiers`       the ComponentResources, one per tier
"""
