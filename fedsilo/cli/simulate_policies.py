"""``fedsilo simulate --site-policy FILE``: read the policies and place them, before any run.

Where each policy applies is ``fedsilo.engine.site_policies``; here the files are read
(every malformed one stops the command with one line, exit 2, as ``client run`` does) and the
user is told which hospitals enforce which policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedsilo.cli.output import console

if TYPE_CHECKING:
    from fl_core.config import FederationConfig
    from fl_core.site_policy import SitePolicy
    from fl_core.types import SiteId


def simulated_policies(
    files: Sequence[Path], federation: FederationConfig
) -> dict[SiteId, SitePolicy]:
    """The policy each simulated hospital enforces; empty without ``--site-policy``."""
    if not files:
        return {}
    from fedsilo.engine.app import build_source
    from fedsilo.engine.site_policies import place_policies, placement_lines
    from fl_core.errors import ConfigError
    from fl_core.site_policy import read_site_policy

    if federation.simulation.engine == "mpi":
        raise ConfigError(
            "--site-policy runs with the process engine only; drop --engine mpi (or "
            "simulation.engine: mpi in --config) to simulate site policies"
        )
    policies = [read_site_policy(path) for path in files]
    site_ids = build_source(federation).site_ids()
    placed = place_policies(policies, site_ids)
    for line in placement_lines(policies, site_ids):
        console.print(line, highlight=False)
    return placed
