"""Hospital site policies in a simulation, enforced by the gate ``client run`` uses.

A deployed hospital has one policy, its own. ``fedsilo simulate --site-policy FILE`` (the
flag may be repeated) lets a user see what policies do to a federation before any hospital
runs one, so the policies are placed as a user naming hospitals would expect:

* a policy whose ``site_id`` is a simulated hospital is that hospital's alone;
* at most one policy whose ``site_id`` is none of them applies to every other hospital, each
  under its own site id (a template: "every hospital runs this policy");
* a hospital no policy reaches serves without one, as ``client run`` without ``--site-policy``.

Each hospital then runs behind ``SiteGate`` with the policy's disclosure floor, exactly as in
``fedsilo.engine.services.run_client``. A policy's site-wide privacy ledger lives in the run
folder, a folder per hospital, so a resumed run keeps what its hospitals already spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fl_client.hospital import Hospital
from fl_client.site_policy_gate import SiteGate
from fl_core.errors import ConfigError
from fl_core.site_policy import SitePolicy
from fl_core.types import SiteId

POLICY_STATE_FOLDER = "site-policy-state"
"""Under the run folder: a folder per hospital holding its policy's privacy ledger."""


def follow_policy(hospital: Hospital, gate: SiteGate) -> None:
    """Check every round the hospital serves against its gate, and hold back what its
    policy's disclosure floor keeps in the hospital."""
    hospital.site_gate = gate
    hospital.disclosure_floor = gate.policy.disclosure_floor


def as_site(policy: SitePolicy, site_id: SiteId) -> SitePolicy:
    """The same terms, as hospital ``site_id``'s own policy (validated again)."""
    return SitePolicy(
        site_id=site_id,
        studies=policy.studies,
        epsilon_budget=policy.epsilon_budget,
        disclosure_floor=policy.disclosure_floor,
        max_update_bytes=policy.max_update_bytes,
    )


def place_policies(
    policies: Sequence[SitePolicy], site_ids: Sequence[SiteId]
) -> dict[SiteId, SitePolicy]:
    """Which policy each simulated hospital runs (see the module docstring).

    Raises ``ConfigError`` (exit 2) for two policies of one hospital, or for more than one
    policy that names no simulated hospital.
    """
    simulated = set(site_ids)
    own: dict[SiteId, SitePolicy] = {}
    templates: list[SitePolicy] = []
    for policy in policies:
        if policy.site_id not in simulated:
            templates.append(policy)
        elif policy.site_id in own:
            raise ConfigError(
                f"two --site-policy files are site {policy.site_id}'s; give each hospital "
                "one policy"
            )
        else:
            own[policy.site_id] = policy
    if len(templates) > 1:
        named = ", ".join(p.site_id for p in templates)
        raise ConfigError(
            f"the site policies of {named} name no simulated hospital "
            f"({_sites_shown(site_ids)}); only one policy may apply to the hospitals without "
            "their own: set the others' site_id to a simulated hospital"
        )
    placed = dict(own)
    if templates:
        for site_id in site_ids:
            if site_id not in placed:
                placed[site_id] = as_site(templates[0], site_id)
    return placed


def placement_lines(policies: Sequence[SitePolicy], site_ids: Sequence[SiteId]) -> list[str]:
    """A line per policy given: the hospitals it reaches (what the user reads before a run)."""
    simulated = set(site_ids)
    others = len(simulated - {policy.site_id for policy in policies})
    return [
        f"site policy of {policy.site_id}: enforced by {policy.site_id}"
        if policy.site_id in simulated
        else f"site policy of {policy.site_id} (not a simulated hospital): enforced by each "
        f"of the {others} hospital(s) without their own"
        for policy in policies
    ]


def enforce_site_policies(
    hospitals: Sequence[Hospital],
    placed: Mapping[SiteId, SitePolicy],
    state_root: Path | None,
) -> None:
    """Put each hosted hospital that has a policy behind its gate.

    ``state_root``: the folder holding a folder per hospital for its privacy ledger.
    """
    for hospital in hospitals:
        policy = placed.get(hospital.site_id)
        if policy is None:
            continue
        state_dir = None if state_root is None else state_root / hospital.site_id
        follow_policy(hospital, SiteGate.open(policy, [hospital.site_id], state_dir))


def _sites_shown(site_ids: Sequence[SiteId]) -> str:
    shown = ", ".join(site_ids[:3])
    return shown + (f", ... {len(site_ids)} in all" if len(site_ids) > 3 else "")
