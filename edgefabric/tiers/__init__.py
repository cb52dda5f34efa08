"""The Pulumi ComponentResources, one per tier. Each takes `(name, XArgs, opts)` with only
its slice of the stack config; none calls a chain or DNS API itself."""
