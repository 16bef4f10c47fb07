"""A closed round's result as the report reads it, with only what a view test sets."""

from __future__ import annotations

from collections.abc import Iterable

from fl_core.exchange.manifests import Decision, RoundPrivacy, RoundResult


def closed_round(
    round_index: int, declined: Iterable[Decision] = (), privacy: RoundPrivacy | None = None
) -> RoundResult:
    return RoundResult(
        federation_id="f",
        round_index=round_index,
        task="train",
        global_sha256="0" * 64,
        next_global_sha256=None,
        accepted=[],
        rejected=[],
        missing=[],
        evaluation=None,
        train_loss=None,
        started_unix=0.0,
        closed_unix=1.0,
        config_hash="h",
        declined=list(declined),
        privacy=privacy,
    )
