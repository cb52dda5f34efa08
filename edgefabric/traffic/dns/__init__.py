"""DNS backends behind one interface (see edgefabric.traffic.dns.base)."""
