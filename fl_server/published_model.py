"""Publishing the federation's model when its final round closes, exactly once.

The exchange is where the federation's users fetch its model (on AWS there is no run
folder), so the model they get must be the one the final round vouches for: its global
model with the recalibration fitted on the summed validation histograms applied
(``fl_core.exchange.published``). Written beside the history it derives from, write-once and
retained; a resumed aggregator that finds it keeps it only if it names the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from fl_core.errors import ExchangeError, ObjectExistsError
from fl_core.exchange.manifests import GlobalManifest, PublishedModel, RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.published import model_of, published_bytes, scaling_to_apply
from fl_core.hashing import sha256_hex

log = structlog.get_logger("fedsilo.server")


def publish_final_model(
    exchange: Exchange, final: GlobalManifest, result: RoundResult, clock: Callable[[], float]
) -> PublishedModel:
    """The published model of the round ``final`` (closed as ``result``), written once."""
    if not final.final or result.round_index != final.round_index:
        raise ValueError(f"round {final.round_index} is not the final round; nothing to publish")
    global_bytes = exchange.read_global_weights(final)
    scaling = scaling_to_apply(model_of(global_bytes), result.recalibration)
    data = published_bytes(global_bytes, scaling)
    manifest = PublishedModel(
        federation_id=exchange.federation_id,
        round_index=final.round_index,
        sha256=sha256_hex(data),
        num_bytes=len(data),
        global_sha256=final.sha256,
        scaling=scaling,
        config_hash=result.config_hash,
        created_unix=clock(),
    )
    stored = exchange.read_published_manifest()
    if stored is None:
        try:
            exchange.publish_model(data, manifest)
        except ObjectExistsError:  # another aggregator, or a file left by a different model
            stored = exchange.read_published_manifest()
            if stored is None:
                raise _differs(exchange, manifest, "its file holds other bytes") from None
        else:
            log.info("model_published", round_index=final.round_index, sha256=manifest.sha256)
            return manifest
    if _same_model(stored, manifest):
        return stored  # published before a restart: the stored manifest is the truth
    raise _differs(exchange, manifest, "its manifest names another model")


def _same_model(stored: PublishedModel, derived: PublishedModel) -> bool:
    """Everything but when it was written."""
    return stored.model_dump(exclude={"created_unix"}) == derived.model_dump(
        exclude={"created_unix"}
    )


def _differs(exchange: Exchange, derived: PublishedModel, what: str) -> ExchangeError:
    return ExchangeError(
        f"the published model in {exchange.describe()} is not round {derived.round_index}'s "
        f"global model with its recalibration ({what}); the exchange was altered or the "
        "federation was run with another model: keep the stored one, and run "
        "`fedsilo ledger verify` to see which round is wrong"
    )
