"""Local stand-in services (anvil, PowerDNS, fake endpoints) shared by tests and scripts/local-env."""
