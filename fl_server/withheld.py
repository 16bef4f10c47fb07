"""What the hospitals' disclosure floors kept out of a round's metrics, counted by rule.

Read from what each hospital says it withheld (``UpdateManifest.suppressed``): hospital-written,
so it is only counted and shown, and only for answers the round did not reject.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from fl_core.disclosure import FloorRule
from fl_core.exchange.manifests import Decision
from fl_core.types import SiteId


def withheld_counts(
    withheld: Mapping[SiteId, FloorRule], decisions: Mapping[SiteId, Decision]
) -> dict[FloorRule, int]:
    """Sites per rule whose evaluation was withheld, among the round's non-rejected answers."""
    counts = Counter(
        rule
        for site_id, rule in withheld.items()
        if (decision := decisions.get(site_id)) is not None and decision.status != "rejected"
    )
    return dict(sorted(counts.items()))
