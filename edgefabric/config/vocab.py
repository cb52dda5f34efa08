"""The vocabularies stack files are written in: cloud names and user regions.

Config validates against these; the DNS backends translate user regions into each
vendor's geography (`edgefabric.traffic.dns.regions`), so the names live here, once.
"""

from __future__ import annotations

from typing import Literal

Cloud = Literal["aws", "azure", "gcp"]
CLOUDS: tuple[Cloud, ...] = ("aws", "azure", "gcp")

# User regions for routing rules, and the continent code each maps to (the codes Route53
# geolocation understands).
USER_REGIONS: dict[str, str] = {
    "north-america": "NA",
    "south-america": "SA",
    "europe": "EU",
    "africa": "AF",
    "asia": "AS",
    "australia": "OC",
    "antarctica": "AN",
}
