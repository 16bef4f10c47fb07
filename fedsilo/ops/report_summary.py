"""The report's opening table: where the data came from, who took part, how the model trained.

A clinical lead reads the figures only after knowing the cohort (hospitals, stays, deaths),
the data source and the settings of the run (strategy, training, privacy), all taken from the
run's ``config.json`` and the aggregator's results.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedsilo.ops.report_stats import SiteFigures
from fl_core.config import FederationConfig
from fl_core.exchange.manifests import RoundResult


def data_source(config: FederationConfig) -> str:
    data = config.data
    if data.source == "prepared":
        return f"prepared per-hospital folders at {data.path}"
    if data.source == "twin":
        return (
            f"synthetic eICU twin: {data.twin.hospitals} hospitals, {data.twin.stays} stays "
            f"(hospitals under {data.twin.min_stays} stays kept out)"
        )
    return (
        f"synthetic data: {data.synthetic.hospitals} hospitals of about "
        f"{data.synthetic.mean_stays} stays"
    )


def strategy_text(config: FederationConfig) -> str:
    settings = config.strategy.model_dump(exclude={"name", "chunk_elements"})
    details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in settings.items())
    return config.strategy.name + (f" ({details})" if details else "")


def personalisation_text(config: FederationConfig) -> str:
    """What each hospital did to the final model on its own data, in words."""
    personalisation = config.personalisation
    parts = []
    if personalisation.finetune_epochs:
        parts.append(f"{personalisation.finetune_epochs} fine-tuning epoch(s) at each hospital")
    if personalisation.local_intercept:
        parts.append(
            "each hospital's own intercept (prior sd "
            f"{personalisation.local_intercept_prior_sd:g} on the log-odds shift)"
        )
    return "; ".join(parts) if parts else "off (no fine-tuning)"


def training_text(config: FederationConfig) -> str:
    t = config.training
    layers = " x ".join(str(n) for n in t.hidden_sizes) or "none"
    return (
        f"{config.rounds} rounds; per round {t.local_epochs} local epoch(s), batch {t.batch_size}, "
        f"{t.optimizer} at learning rate {t.learning_rate:g}, weight decay {t.weight_decay:g}, "
        f"class weighting {t.class_weighting}; hidden layers {layers}, dropout {t.dropout:g}"
    )


def privacy_text(config: FederationConfig) -> str:
    privacy = config.privacy
    parts = [
        "secure aggregation on" if privacy.secagg.enabled else "secure aggregation off",
        "DP-SGD at each hospital" if privacy.dp_sgd is not None else "no DP-SGD",
        "DP-FedAvg at the aggregator" if privacy.dp_fedavg is not None else "no DP-FedAvg",
    ]
    return "; ".join(parts) + (
        "" if privacy.dp_sgd or privacy.dp_fedavg else " (no privacy budget is spent)"
    )


def summary_rows(
    config: FederationConfig,
    results: Sequence[RoundResult],
    sites: Sequence[SiteFigures],
    evaluation_round: int | None,
) -> list[tuple[str, str]]:
    """(label, value) lines of the run summary."""
    trained = [r for r in results if r.task == "train"]
    members = sorted({d.site_id for r in results for d in (*r.accepted, *r.rejected, *r.declined)})
    training_stays = {d.site_id: d.num_examples for r in trained for d in r.accepted}
    stays = sum(s.stays for s in sites)
    deaths = sum(s.deaths for s in sites)
    evaluable = sum(s.evaluable for s in sites)
    rows = [
        ("federation", config.federation_id),
        ("data source", data_source(config)),
        (
            "hospitals",
            f"{len(members)} took part; {len(sites)} scored the final model on their test split",
        ),
        (
            "training stays",
            f"{sum(training_stays.values())} (the last round each hospital's update was accepted)",
        ),
        (
            "test stays",
            f"{stays} stays, {deaths} deaths ({deaths / stays:.1%})"
            if stays
            else "no test stays were reported",
        ),
        (
            "hospitals with an AUROC",
            f"{evaluable} of {len(sites)} have enough deaths and survivors in their test split",
        ),
        ("strategy", strategy_text(config)),
        ("training", training_text(config)),
        ("privacy", privacy_text(config)),
        ("personalisation", personalisation_text(config)),
        (
            "final evaluation",
            f"round {evaluation_round}; risk histograms of {config.evaluation.histogram_bins} bins"
            if evaluation_round
            else "no round was evaluated",
        ),
    ]
    return rows
