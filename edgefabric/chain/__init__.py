"""Engine-free chain access: a web3 client with one nonce manager per key, and the
ServiceRegistry client. The heartbeat agent ships exactly this package."""
