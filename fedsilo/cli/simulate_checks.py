"""What ``fedsilo simulate`` refuses before any run folder or worker exists (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from fl_core.config import FederationConfig


def check_data_options(*, hospitals: int | None, data: Path | None, twin: bool) -> None:
    """Refuse data options that exclude each other instead of silently dropping one."""
    if data is not None and twin:
        raise typer.BadParameter(
            "--data and --twin name two data sources; keep one", param_hint="'--data'"
        )
    if data is not None and hospitals is not None:
        raise typer.BadParameter(
            "--hospitals sets how many synthetic (or twin) hospitals to make, but --data "
            "brings its own; drop --hospitals",
            param_hint="'--hospitals'",
        )


def check_dp_sgd_delta(federation: FederationConfig) -> None:
    """DP-SGD's delta against the largest hospital's training rows, before any worker starts.

    Each hospital checks it again with its own rows; checked here, a bad ``--dp-delta`` is
    an option error (exit 2) instead of a failed hospital worker (exit 1).
    """
    settings = federation.privacy.dp_sgd
    if settings is None:
        return
    from fedsilo.engine.app import build_source
    from fl_core.privacy import check_delta

    rows = build_source(federation).train_rows()
    if rows:
        site, largest = max(rows.items(), key=lambda item: item[1])
        check_delta(
            what=f"--dp-delta (privacy.dp_sgd; site {site})",
            delta=settings.delta,
            population=largest,
            unit="training rows",
        )
