"""Pulumi ComponentResources, one module per tier, and the typed stack config."""
