"""Every key of the exchange, built in one place (docs/design.md, "Exchange layout").

The ids in the keys are checked by ``fl_core.ids`` (``check_site_id`` is re-exported here).

The IAM policies in ``stacks/`` grant exactly these keys: ``fl_core.exchange.key_grammar``
derives their patterns from this module, and the tests check both against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fl_core.ids import ID_REGEX, check_federation_id, check_site_id
from fl_core.types import ObjectKey, RoundIndex, SiteId

SECAGG_GLOBAL_DOCUMENTS = ("roster", "setup", "unmask")
SECAGG_SITE_DOCUMENTS = ("advert", "answer")

UpdateKind = Literal["weights", "manifest", "secagg"]
"""What a canonical key under a round's updates prefix holds: a training answer (weights with
their manifest inside), a manifest alone (evaluation or declined), a secure aggregation
document."""
_PREFLIGHT_NAME = re.compile(rf"({ID_REGEX})\.preflight-[0-9a-z]{{1,40}}\.json", re.ASCII)
_UPDATE_KEY = re.compile(rf"rounds/[0-9]{{6}}/updates/({ID_REGEX})\.(json|safetensors)", re.ASCII)


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
        """A hospital's own secure aggregation documents (``advert``, ``answer``), beside its
        update in the round's ``updates/`` folder, named by its own site id."""
        if document not in SECAGG_SITE_DOCUMENTS:
            raise ValueError(f"unknown secagg document {document!r}")
        return f"{self.updates_prefix(round_index)}{check_site_id(site_id)}.secagg-{document}.json"

    def preflight_prefix(self) -> str:
        """Round 0 is never trained: its updates prefix holds onboarding preflight reports.

        They sit in round 0's ``updates/`` folder, named by the site id like every other
        hospital write, so that the preflight proves the same kind of write a round needs.
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
        """The site whose preflight report ``key`` is, matched against the whole key.

        Never the last segment alone: ``updates/site-a.x/site-b.preflight-1.json`` is under
        site-a's write grant (``site-a.*``; IAM's ``*`` matches ``/``), and is nobody's report.
        """
        prefix = self.preflight_prefix()
        if not key.startswith(prefix):
            return None
        match = _PREFLIGHT_NAME.fullmatch(key[len(prefix) :])
        return match.group(1) if match else None

    def is_preflight_key_of(self, key: ObjectKey, site_id: SiteId) -> bool:
        """Whether ``key`` is exactly the name of one of ``site_id``'s preflight reports."""
        return self.site_of_preflight_key(key) == site_id

    def result_key(self, round_index: RoundIndex) -> ObjectKey:
        return f"{self.round_prefix(round_index)}result.json"

    def published_prefix(self) -> str:
        """The federation's published model: one per federation, written when it ends."""
        return f"{self.root}published/"

    def published_weights_key(self) -> ObjectKey:
        return f"{self.published_prefix()}model.safetensors"

    def published_manifest_key(self) -> ObjectKey:
        return f"{self.published_prefix()}model.json"

    def ledger_prefix(self) -> str:
        return f"{self.root}ledger/"

    def ledger_key(self, round_index: RoundIndex) -> ObjectKey:
        return f"{self.ledger_prefix()}{round_index:06d}.json"

    def canonical_update_keys(
        self, round_index: RoundIndex, invited_sites: Iterable[SiteId]
    ) -> dict[ObjectKey, tuple[SiteId, UpdateKind]]:
        """Every name an invited site may write in a round, and whose it is and what.

        The aggregator looks each listed key up here and never parses a site id out of a
        key: ``updates/site-a.x/site-b.json`` merely ends like site-b's answer. Any listed
        key not in this dict is foreign.
        """
        keys: dict[ObjectKey, tuple[SiteId, UpdateKind]] = {}
        for site_id in invited_sites:
            keys[self.update_weights_key(round_index, site_id)] = (site_id, "weights")
            keys[self.update_manifest_key(round_index, site_id)] = (site_id, "manifest")
            for document in SECAGG_SITE_DOCUMENTS:
                key = self.secagg_update_key(round_index, site_id, document)
                keys[key] = (site_id, "secagg")
        return keys

    def site_of_update_key(self, key: ObjectKey) -> tuple[SiteId, str] | None:
        """``(site_id, extension)`` of an answer's key (``{site_id}.json`` or
        ``{site_id}.safetensors`` directly under a round's updates prefix), or None.

        The whole key is matched, never its last segment (see ``canonical_update_keys``).
        """
        match = (
            _UPDATE_KEY.fullmatch(key, pos=len(self.root)) if key.startswith(self.root) else None
        )
        return (match.group(1), match.group(2)) if match else None
