"""MQTT data flows between the tiers, as Mosquitto 2 configuration: pure and engine-free.

`topology` turns the stack config's `dataFlows` section into brokers (one per edge site,
region and cloud core with regions) and the bridges between them; `mosquitto` renders each
broker's `mosquitto.conf` and ACL file; `pki` issues the stack CA and the certificates.
The tiers (`edgefabric.tiers.brokers`) put the rendered text into ConfigMaps, Secrets and
files; the integration tests and `bench/dataflow.py` run real `mosquitto` on exactly it.
"""

from edgefabric.dataflow.mosquitto import (
    CERT_FILES,
    Endpoint,
    Placement,
    acl_file,
    cert_files,
    config_files,
    mosquitto_conf,
)
from edgefabric.dataflow.pki import Issued, issue, new_ca
from edgefabric.dataflow.topology import Broker, Topology, topology, topology_of

__all__ = [
    "CERT_FILES",
    "Broker",
    "Endpoint",
    "Issued",
    "Placement",
    "Topology",
    "acl_file",
    "cert_files",
    "config_files",
    "issue",
    "mosquitto_conf",
    "new_ca",
    "topology",
    "topology_of",
]
