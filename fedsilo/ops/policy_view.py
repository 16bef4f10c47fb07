"""The report's section on rounds hospitals declined under their site policy.

A decline by policy is the hospital's decision, not a fault: the section names the rule and the
hospital's one-line reason (``fl_client.site_policy_gate``), so the coordinating centre knows
what to ask for (a study to approve, privacy protection to add) instead of guessing why a
hospital went quiet. Built from ``result.json`` alone, like the other sections.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from fedsilo.ops.privacy_report import TableRenderer
from fl_core.exchange.manifests import RoundResult

POLICY_PREFIX = "policy "
"""The aggregator's reason for a site policy's decline: ``policy <rule>``."""


def policy_declines_html(results: Sequence[RoundResult], table: TableRenderer) -> str:
    """One row per round and hospital a site policy declined; empty when none did."""
    rows = [
        [
            str(r.round_index),
            d.site_id,
            (d.reason or "").removeprefix(POLICY_PREFIX),
            d.detail or "-",
        ]
        for r in results
        for d in r.declined
        if (d.reason or "").startswith(POLICY_PREFIX)
    ]
    if not rows:
        return ""
    intro = html.escape(
        "Hospitals whose own site policy refused these rounds; nothing was computed on their "
        "data for them. A rule of study_not_approved or architecture_not_approved asks the "
        "hospital to review the study (fedsilo site approve)."
    )
    return f"<h2>Rounds declined by a hospital's site policy</h2><p>{intro}</p>" + table(
        ["round", "site", "rule", "detail"], rows, {1, 2, 3}
    )
