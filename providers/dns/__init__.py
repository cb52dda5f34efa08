"""DNS backends behind one interface (see providers.dns.base)."""
