"""Developer tooling around the program: the mock-render harness, the Markdown report,
promote-check and the config reference. Never imported by `edgefabric`."""
