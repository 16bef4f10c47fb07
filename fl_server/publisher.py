"""Publishing a round's global model and its manifest, exactly once.

A model published before a crash is found again and kept (the stored manifest is the truth),
and two aggregators started at once cannot publish two different models for one round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from fl_core.config import FederationConfig
from fl_core.errors import ObjectExistsError
from fl_core.exchange.manifests import GlobalManifest, Task
from fl_core.exchange.protocol import Exchange
from fl_core.hashing import sha256_hex
from fl_core.study import Study
from fl_core.types import SiteId

log = structlog.get_logger("fedsilo.server")


class Publisher:
    """Writes each round's global model with the study it serves and the ledger's head."""

    def __init__(
        self,
        exchange: Exchange,
        config: FederationConfig,
        study: Study,
        sites: Sequence[SiteId],
        clock: Callable[[], float],
    ) -> None:
        self.exchange = exchange
        self.config = config
        self.study = study
        self.config_hash = study.digest()
        self.sites = list(sites)
        self.clock = clock

    def publish(
        self, round_index: int, weights: bytes, parent: str | None, task: Task, final: bool
    ) -> GlobalManifest:
        """Round ``round_index``'s model (``parent``: the sha256 of the model before it)."""
        existing = self.exchange.read_global_manifest(round_index)
        if existing is not None:
            return existing  # published before a crash: the stored one is the truth
        # the previous round's entry is written before its next model: it is the head
        head = self.exchange.read_ledger_entry(round_index - 1) if round_index > 1 else None
        now = self.clock()
        manifest = GlobalManifest(
            federation_id=self.exchange.federation_id,
            round_index=round_index,
            task=task,
            final=final,
            sha256=sha256_hex(weights),
            parent_sha256=parent,
            num_bytes=len(weights),
            deadline_unix=now + self.config.round.deadline_s,
            invited_sites=self.sites,
            config_hash=self.config_hash,
            created_unix=now,
            ledger_head=head.entry_hash if head is not None else None,
            study=self.study,
        )
        try:
            self.exchange.publish_global(weights, manifest)
        except ObjectExistsError:
            # another aggregator published this round first (two started at once): the stored
            # manifest is the truth, provided it names the same model
            stored = self.exchange.read_global_manifest(round_index)
            if stored is None or stored.sha256 != manifest.sha256:
                raise
            return stored
        log.info("global_published", round_index=round_index, task=task, sha256=manifest.sha256)
        return manifest
