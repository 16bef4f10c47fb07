"""Every key of the exchange, built in one place (DESIGN.md, "Exchange layout").

The ids in the keys are checked by ``fl_core.ids`` (``check_site_id`` is re-exported here).

IAM policies in ``stacks/`` grant prefixes that must match these keys; the tests check both
against this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fl_core.ids import ID_REGEX, check_federation_id, check_site_id
from fl_core.types import ObjectKey, RoundIndex, SiteId

SECAGG_GLOBAL_DOCUMENTS = ("roster", "setup", "unmask")
SECAGG_SITE_DOCUMENTS = ("advert", "answer")


@dataclass(frozen=True)
class ExchangeLayout:
    """Keys of one federation; a store maps them under its own prefix (``s3://bucket/prefix``)."""

    federation_id: str

    def __post_init__(self) -> None:
        check_federation_id(self.federation_id)

    @property
    def root(self) -> str:
        return f"federations/{self.federation_id}/"

    def registry_prefix(self) -> str:
        return f"{self.root}registry/"

    def registry_key(self, site_id: SiteId) -> ObjectKey:
        return f"{self.registry_prefix()}{check_site_id(site_id)}.json"

    def state_key(self) -> ObjectKey:
        return f"{self.root}state.json"

    def round_prefix(self, round_index: RoundIndex) -> str:
        if round_index < 1:
            raise ValueError(f"round_index starts at 1, got {round_index}")
        return f"{self.root}rounds/{round_index:06d}/"

    def global_weights_key(self, round_index: RoundIndex) -> ObjectKey:
        return f"{self.round_prefix(round_index)}global.safetensors"

    def global_manifest_key(self, round_index: RoundIndex) -> ObjectKey:
        return f"{self.round_prefix(round_index)}global.json"

    def updates_prefix(self, round_index: RoundIndex) -> str:
        return f"{self.round_prefix(round_index)}updates/"

    def update_weights_key(self, round_index: RoundIndex, site_id: SiteId) -> ObjectKey:
        return f"{self.updates_prefix(round_index)}{check_site_id(site_id)}.safetensors"

    def update_manifest_key(self, round_index: RoundIndex, site_id: SiteId) -> ObjectKey:
        return f"{self.updates_prefix(round_index)}{check_site_id(site_id)}.json"

    def secagg_global_key(self, round_index: RoundIndex, document: str) -> ObjectKey:
        """Secure aggregation documents the aggregator relays to every hospital of a round
        (``roster``, ``setup``, ``unmask``): ``global.*``, the one prefix hospitals may read."""
        if document not in SECAGG_GLOBAL_DOCUMENTS:
            raise ValueError(f"unknown secagg document {document!r}")
        return f"{self.round_prefix(round_index)}global.secagg-{document}.json"

    def secagg_update_key(
        self, round_index: RoundIndex, site_id: SiteId, document: str
    ) -> ObjectKey:
        """A hospital's own secure aggregation documents (``advert``, ``answer``), under its
        update keys (``updates/{site_id}.*``), the one prefix it may write."""
        if document not in SECAGG_SITE_DOCUMENTS:
            raise ValueError(f"unknown secagg document {document!r}")
        return f"{self.updates_prefix(round_index)}{check_site_id(site_id)}.secagg-{document}.json"

    def preflight_prefix(self) -> str:
        """Round 0 is never trained: its updates prefix holds onboarding preflight reports.

        They sit under ``rounds/*/updates/{site_id}.*`` so that the one write a hospital role
        has is the one the preflight proves, and nothing else need be granted.
        """
        return f"{self.root}rounds/{0:06d}/updates/"

    def preflight_key(self, site_id: SiteId, stamp: str) -> ObjectKey:
        if not re.fullmatch(r"[0-9a-z]{1,40}", stamp):
            raise ValueError(f"preflight stamp {stamp!r} must be lower-case letters and digits")
        return f"{self.preflight_prefix()}{check_site_id(site_id)}.preflight-{stamp}.json"

    def moments_key(self, site_id: SiteId) -> ObjectKey:
        """A hospital's feature moments, reported once before round 1 (round 0, like preflight)."""
        return f"{self.preflight_prefix()}{check_site_id(site_id)}.moments.json"

    def site_of_preflight_key(self, key: ObjectKey) -> SiteId | None:
        name = key.rsplit("/", 1)[-1]
        match = re.fullmatch(rf"({ID_REGEX})\.preflight-[0-9a-z]{{1,40}}\.json", name)
        return match.group(1) if match else None

    def result_key(self, round_index: RoundIndex) -> ObjectKey:
        return f"{self.round_prefix(round_index)}result.json"

    def ledger_prefix(self) -> str:
        return f"{self.root}ledger/"

    def ledger_key(self, round_index: RoundIndex) -> ObjectKey:
        return f"{self.ledger_prefix()}{round_index:06d}.json"

    def site_of_update_key(self, key: ObjectKey) -> tuple[SiteId, str] | None:
        """``(site_id, extension)`` of a key under an updates prefix, or None for other keys."""
        name = key.rsplit("/", 1)[-1]
        stem, dot, ext = name.partition(".")
        if not dot or ext not in ("json", "safetensors"):
            return None
        return stem, ext
