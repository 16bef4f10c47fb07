"""The federated data profile as HTML: the pooled cohort per feature and each hospital's
missingness, with every cell a hospital withheld under its floor named, never guessed."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

from fedsilo.ops.data_profile import PROFILE_HTML, PROFILE_JSON, FederatedDataProfile
from fedsilo.ops.html_page import heading, page, paragraph, table
from fl_core.data.profile import PooledFeature


def bin_labels(edges: Sequence[float]) -> list[str]:
    """``< e0``, ``[e0, e1)``, ..., ``[e_n-1, e_n]``, ``> e_n`` (the last edge is inside)."""
    inner = [f"[{a:g}, {b:g})" for a, b in pairwise(edges)]
    if inner:
        inner[-1] = inner[-1][:-1] + "]"
    return [f"< {edges[0]:g}", *inner, f"> {edges[-1]:g}"]


def _feature_table(feature: PooledFeature) -> str:
    total = sum(feature.counts)
    rows = []
    for label, count, withheld in zip(
        bin_labels(feature.edges), feature.counts, feature.withheld_by, strict=True
    ):
        if count == 0 and not withheld:
            continue
        share = f"{count / total:.1%}" if total else ""
        rows.append([label, str(count), share, ", ".join(withheld)])
    return table(["bin", "stays", "share", "withheld by (under their floor)"], rows, {0, 3})


def _missing_table(profile: FederatedDataProfile) -> str:
    sites = [s.site_id for s in profile.sites]
    rows = []
    for feature in profile.pooled.features:
        row = [feature.name]
        for site in sites:
            missing = feature.missing.get(site, "left out")
            if missing is None:
                row.append("withheld")
            elif isinstance(missing, str):
                row.append(missing)
            else:
                rows_at_site = missing + feature.present.get(site, 0)
                row.append(f"{missing / rows_at_site:.0%}" if rows_at_site else "")
        rows.append(row)
    return table(["feature", *sites], rows, {0}, "missingness")


def profile_parts(profile: FederatedDataProfile) -> list[str]:
    """The profile's sections, for its own page or the run report."""
    stays = sum(s.num_examples for s in profile.sites)
    parts = [
        paragraph(
            f"{len(profile.sites)} hospitals, {stays} training stays, profiled at each hospital "
            "on fixed bins; a count under a hospital's floor is withheld and named below."
        )
    ]
    if profile.refused:
        refused = "; ".join(f"{s}: {r}" for s, r in sorted(profile.refused.items()))
        parts.append(paragraph(f"reports refused: {refused}", "fail"))
    if profile.without_profile:
        parts.append(paragraph(f"no profile reported: {', '.join(profile.without_profile)}"))
    sizes = [[s.site_id, str(s.num_examples), str(s.min_count)] for s in profile.sites]
    parts += [
        heading("Hospitals"),
        table(["hospital", "training stays", "floor (stays)"], sizes, {0}, "profile-sites"),
        heading("Missing values per hospital"),
        _missing_table(profile),
        heading("Pooled distributions"),
    ]
    for feature in profile.pooled.features:
        parts.append(heading(feature.name, 3))
        if feature.left_out:
            left = "; ".join(f"{s}: {r}" for s, r in sorted(feature.left_out.items()))
            parts.append(paragraph(f"left out: {left}"))
        parts.append(_feature_table(feature))
    return parts


def profile_page(profile: FederatedDataProfile) -> str:
    return page(f"fedsilo data profile: {profile.federation_id}", profile_parts(profile))


def write_data_profile(profile: FederatedDataProfile, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / PROFILE_JSON, "html": out / PROFILE_HTML}
    paths["json"].write_text(profile.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["html"].write_text(profile_page(profile), encoding="utf-8")
    return paths
