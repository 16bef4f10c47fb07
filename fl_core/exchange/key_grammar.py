"""The exact keys a hospital may write and read, as IAM resource patterns.

IAM resource patterns are not paths: ``*`` and ``?`` also match ``/``. A grant such as
``rounds/*/updates/{site}.*`` therefore also grants ``rounds/1/updates/{site}.x/{other}.json``.
The patterns here are exact names instead: every suffix the layout builds is spelled out, the
six-digit round is ``??????``, and the one free segment (the preflight stamp) is a ``*``. They
are exact only together with their ``nested`` patterns: a policy that denies those (keys one
level deeper than any canonical key of the same folder) for the same action leaves no ``?`` or
``*`` able to span a ``/``.

Everything is derived from ``ExchangeLayout`` by building keys with marker values and putting
the pattern in their place, so a key added to the layout cannot drift from its grant.
"""

from __future__ import annotations

from dataclasses import dataclass

from fl_core.exchange.layout import SECAGG_GLOBAL_DOCUMENTS, SECAGG_SITE_DOCUMENTS, ExchangeLayout

ROUND_PATTERN = "??????"
"""Any six characters: IAM has no character classes, so a round is only bounded in length."""
STAMP_PATTERN = "*"
"""The preflight stamp: any characters but ``/`` once the nested keys are denied."""

_MARKER_ROUND = 123456
_MARKER_SITE = "fedsilo-site-marker"
_MARKER_STAMP = "fedsilostampmarker"


@dataclass(frozen=True)
class HospitalKeyPatterns:
    """Key patterns relative to the bucket (``federations/{fid}/...``) for one site pattern."""

    writes: tuple[str, ...]
    reads: tuple[str, ...]
    nested_writes: tuple[str, ...]
    """Deny these writes, and ``writes`` are exact."""
    nested_reads: tuple[str, ...]
    """Deny these reads, and ``reads`` are exact."""
    nested: tuple[str, ...]
    """Deeper than any key of ``writes`` or ``reads``: deny any use of these (KMS, where one
    action serves both a read and a write)."""


def hospital_key_patterns(
    layout: ExchangeLayout, site: str, round_pattern: str = ROUND_PATTERN
) -> HospitalKeyPatterns:
    """What the hospital ``site`` (a site id, or an IAM policy variable) may write and read.

    Writes: its update weights and manifest, its secure aggregation advert and answer (any
    round), its moments and its preflight reports (round 0). Reads: what is public to the
    federation (global models, manifests and secure aggregation documents, round results,
    ledger entries, the published model and its manifest) and its own registry entry.
    ``round_pattern`` ``*`` (any one segment, once the nested keys are denied) serves
    evaluators that know no ``?``.
    """
    writes = [
        layout.update_weights_key(_MARKER_ROUND, _MARKER_SITE),
        layout.update_manifest_key(_MARKER_ROUND, _MARKER_SITE),
        *(
            layout.secagg_update_key(_MARKER_ROUND, _MARKER_SITE, document)
            for document in SECAGG_SITE_DOCUMENTS
        ),
        layout.moments_key(_MARKER_SITE),
        layout.preflight_key(_MARKER_SITE, _MARKER_STAMP),
    ]
    reads = [
        layout.global_weights_key(_MARKER_ROUND),
        layout.global_manifest_key(_MARKER_ROUND),
        *(
            layout.secagg_global_key(_MARKER_ROUND, document)
            for document in SECAGG_GLOBAL_DOCUMENTS
        ),
        layout.result_key(_MARKER_ROUND),
        layout.ledger_key(_MARKER_ROUND),
        layout.registry_key(_MARKER_SITE),
        layout.published_weights_key(),
        layout.published_manifest_key(),
    ]
    return HospitalKeyPatterns(
        writes=tuple(_pattern(layout, key, site, round_pattern) for key in writes),
        reads=tuple(_pattern(layout, key, site, round_pattern) for key in reads),
        nested_writes=_nested_key_patterns(layout, writes),
        nested_reads=_nested_key_patterns(layout, reads),
        nested=_nested_key_patterns(layout, writes + reads),
    )


def _nested_key_patterns(layout: ExchangeLayout, keys: list[str]) -> tuple[str, ...]:
    """Keys with more ``/`` than the deepest of ``keys`` in the same folder (``rounds``,
    ``ledger``, ``registry``, ``published``)."""
    deepest: dict[str, int] = {}
    for key in keys:
        relative = key.removeprefix(layout.root)
        folder = relative.split("/", 1)[0]
        deepest[folder] = max(deepest.get(folder, 0), relative.count("/"))
    return tuple(f"{layout.root}{folder}" + "/*" * (depth + 1) for folder, depth in deepest.items())


def _pattern(layout: ExchangeLayout, key: str, site: str, round_pattern: str) -> str:
    """``key`` with its marker round, site and stamp replaced by their patterns."""
    relative = key.removeprefix(layout.root)
    relative = relative.replace(f"rounds/{_MARKER_ROUND:06d}/", f"rounds/{round_pattern}/")
    relative = relative.replace(f"ledger/{_MARKER_ROUND:06d}.", f"ledger/{round_pattern}.")
    relative = relative.replace(f"/{_MARKER_SITE}.", f"/{site}.")
    relative = relative.replace(f"-{_MARKER_STAMP}.", f"-{STAMP_PATTERN}.")
    for marker in (_MARKER_SITE, _MARKER_STAMP, f"{_MARKER_ROUND:06d}"):
        if marker in relative:
            raise ValueError(f"the layout put a marker where no pattern belongs: {key!r}")
    return f"{layout.root}{relative}"
