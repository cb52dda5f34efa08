"""In-repo fake vendor APIs that validate every request against published schemas."""
