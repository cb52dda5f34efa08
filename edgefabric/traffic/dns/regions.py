"""User-region vocabulary mapped onto each DNS vendor's geography.

Routing rules name user regions (`north-america`, `europe`, ...; the stack
config validates them). Each backend needs its own codes:
- Route53 geolocation: continent codes;
- Azure Traffic Manager geographic routing: `GEO-xx` region codes;
- GCP Cloud DNS geo routing: a GCP region near the users.
"""

from __future__ import annotations

from edgefabric.config.vocab import USER_REGIONS as CONTINENT
from edgefabric.errors import ConfigError

# Azure's geographic hierarchy ("GEO-NA" covers North/Central America + Caribbean).
AZURE_GEO: dict[str, str] = {
    "NA": "GEO-NA",
    "SA": "GEO-SA",
    "EU": "GEO-EU",
    "AF": "GEO-AF",
    "AS": "GEO-AS",
    "OC": "GEO-AP",
    "AN": "GEO-AN",
}

GCP_LOCATION: dict[str, str] = {
    "NA": "us-east1",
    "SA": "southamerica-east1",
    "EU": "europe-west1",
    "AF": "africa-south1",
    "AS": "asia-east1",
    "OC": "australia-southeast1",
}


def continent(region: str) -> str:
    """Continent code of a user region; accepts a code as-is."""
    if region in CONTINENT.values():
        return region
    try:
        return CONTINENT[region]
    except KeyError:
        raise ConfigError.one("routing.rules[].regions", region, f"a user region: {', '.join(CONTINENT)}") from None
