"""The heartbeat agent: keeps registered services alive on the ServiceRegistry."""
