"""The edgefabric CrossGuard pack: `pulumi preview --policy-pack policies
--policy-pack-config policies/config/<env>.json`.

Enforcement is not decided here: every policy defaults to advisory, and the per-environment
config file sets the level (advisory in local/dev, mandatory in staging/prod) and the
environment's knobs (version window, which checks apply).
"""

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import ALL_POLICIES
from rules.runtime import install_secret_marking

# Keep secretness visible to the secrets policy (see rules/runtime.py for why).
install_secret_marking()

PolicyPack(
    name="edgefabric",
    policies=ALL_POLICIES,
    enforcement_level=EnforcementLevel.ADVISORY,
)
