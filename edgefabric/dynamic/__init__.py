"""The Pulumi dynamic resources: thin adapters over `edgefabric.chain` and
`edgefabric.traffic`. Each has its own type token and a provider-version input."""
