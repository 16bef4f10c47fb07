"""An honest evaluation of a federation on prepared eICU folders: cross-validation per hospital.

Why not the prepared test split: the eICU-CRD Demo has 186 hospitals of ~11 stays, most with
one death or none. A per-hospital 70/15/15 split keeps a hospital's single death in train, so
the pooled test split holds 4 deaths and any AUROC on it is noise.

Instead every hospital deals its own stays into ``folds`` folds, stratified by label (a
hospital's one death lands in any fold with equal chance, ``fl_core.data.split.assign_folds``).
For fold k every hospital trains on its other folds and tests on fold k, so each fold's test
stays are held out at every hospital, and over the folds every stay is tested exactly once
(~175 deaths on the demo instead of 4). Each fold is a real federation (``simulate``: hospital
processes, the exchange, FedAvg), scored beside pooled training (``fedsilo.ops.baselines``, trained
the same way on the same training stays) and APACHE IVa's ``predictedhospitalmortality`` on the
same test stays. Results: per-fold mean and spread, and the out-of-fold AUROC over every stay.

A fold takes minutes on the eICU demo, so every federation reports its rounds to an
``EvaluationProgress`` (the CLI draws bars with an ETA), and the fold folders and run folders
are removed once scored unless ``keep`` is set.

Pooling rows happens here only because this is a simulation measuring what federating costs.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from fedsilo.engine.app import DEFAULT_APP, FederatedApp
from fedsilo.engine.federation import SimulationEvents
from fedsilo.engine.metrics_row import MetricsRow
from fedsilo.engine.process_engine import simulate
from fedsilo.ops.baselines import local_only_predictions, pooled_predictions
from fedsilo.ops.hospital_view import HospitalComparison, compare_hospitals
from fl_client.personalise import refit_intercept
from fl_client.trainer import ClientTrainer
from fl_core.calibration import Calibration, calibration_from_histogram
from fl_core.config import FederationConfig
from fl_core.data.base import SiteData, Split
from fl_core.data.prepared import (
    LABEL_COLUMN,
    SCHEMA_FILE,
    PreparedFolderSource,
    PreparedSchema,
    SiteEntry,
    SplitSettings,
)
from fl_core.data.split import SPLIT_NAMES, assign_folds
from fl_core.errors import ConfigError
from fl_core.metrics import ClassHistogram, exact_auroc
from fl_core.recalibration import without_scaling

DEFAULT_FOLDS = 5


class EvaluationProgress(Protocol):
    """What a cross-validation tells whoever waits for it."""

    def federation_started(self, label: str, steps: int) -> None:
        """A fold's federation begins: ``steps`` is its rounds plus one for the yardsticks."""

    def advance(self, done: str) -> None:
        """One step of the running federation finished (``done`` says which, and what runs
        next when that takes a while)."""

    def federation_finished(self, label: str) -> None: ...


class _RoundsToProgress(SimulationEvents):
    """Passes each finished round of a fold's federation on to the progress."""

    def __init__(self, rounds: int, progress: EvaluationProgress) -> None:
        super().__init__(rounds)
        self.progress = progress

    def row_ready(self, row: MetricsRow) -> None:
        done = f"round {row.round} of {self.rounds} done"
        last = row.round == self.rounds  # the yardsticks train next: say so while they run
        self.progress.advance(f"{done}; training the yardsticks" if last else done)


@dataclass(frozen=True)
class Scores:
    """AUROCs of one federation and its yardsticks on one set of test stays."""

    federated: float | None
    """Exact AUROC of the final federated model (the aggregator's histogram figure is beside)."""
    federated_histogram: float | None
    pooled: float | None
    local_only_mean: float | None
    local_only_sites: int
    references: dict[str, float | None]
    """``apache`` (APACHE IVa's prediction), ``bayes`` (true risk; synthetic twin only)."""
    test_stays: int
    test_deaths: int
    calibration: dict[str, Calibration | None] = field(default_factory=dict)
    """``federated``, ``pooled`` and each reference, from the histogram of their test risks."""
    hospitals: HospitalComparison | None = None
    """Each hospital's own test stays, federated vs a model of its own (``local_only``)."""
    seconds: float = 0.0
    """Wall time of the fold: its federation and its yardsticks."""
    validation_log_loss: float | None = None
    """Mean log-loss of the published (recalibrated) federated model on the fold's validation
    rows, which are training rows: what a choice between candidates may look at."""
    federated_on_references: dict[str, float | None] = field(default_factory=dict)
    """The federated model's AUROC on the stays each reference scores (APACHE IVa gives no
    prediction for some): the like-for-like comparison with that reference."""
    own_intercept: float | None = None
    """With ``personalisation.local_intercept``: AUROC of the federated model with each
    hospital's own intercept (``OWN_INTERCEPT``) over the fold's test stays."""
    own_intercept_on_references: dict[str, float | None] = field(default_factory=dict)
    """The same model's AUROC on the stays each reference scores."""


@dataclass(frozen=True)
class CrossValidation:
    """Every fold of every repeat, and the out-of-fold AUROC of each repeat."""

    folds: int
    repeats: int
    per_fold: list[Scores]
    out_of_fold: list[dict[str, float | None]] = field(default_factory=list)
    """Per repeat: ``federated``, ``pooled`` and each reference, over every stay scored once."""
    out_of_fold_calibration: list[dict[str, Calibration | None]] = field(default_factory=list)

    def spread(self, name: str) -> tuple[float, float, int]:
        """Mean, standard deviation (ddof 1) and count of one figure over folds and repeats."""
        values = [v for v in (_figure(s, name) for s in self.per_fold) if v is not None]
        if not values:
            return math.nan, math.nan, 0
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return float(np.mean(values)), sd, len(values)

    def validation_loss(self) -> float | None:
        """Mean over folds of the federated model's validation log-loss (training rows only)."""
        values = [s.validation_log_loss for s in self.per_fold if s.validation_log_loss is not None]
        return float(np.mean(values)) if values else None

    def out_of_fold_spread(self, name: str) -> tuple[float, float, int]:
        values = [v for v in (r.get(name) for r in self.out_of_fold) if v is not None]
        if not values:
            return math.nan, math.nan, 0
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return float(np.mean(values)), sd, len(values)

    def out_of_fold_calibration_mean(self, name: str) -> dict[str, float | None]:
        """Mean over repeats of each out-of-fold calibration figure of one model."""
        found = [c for c in (r.get(name) for r in self.out_of_fold_calibration) if c is not None]
        means: dict[str, float | None] = {}
        for figure in ("brier", "ece", "intercept", "slope"):
            values = [v for v in (getattr(c, figure) for c in found) if v is not None]
            means[figure] = float(np.mean(values)) if values else None
        return means


ON_STAYS_OF = "federated_on_stays_of_"
"""``federated_on_stays_of_apache``: the federated AUROC on the stays APACHE scores."""
OWN_INTERCEPT = "federated_own_intercept"
"""The federated model with each hospital's intercept refitted on its own training rows, as
``personalisation.local_intercept`` has every hospital do after the last round."""
OWN_INTERCEPT_ON_STAYS_OF = f"{OWN_INTERCEPT}_on_stays_of_"
"""The same on the stays a reference scores (``..._on_stays_of_apache``)."""


def _figure(scores: Scores, name: str) -> float | None:
    if name in ("federated", "federated_histogram", "pooled", "local_only_mean"):
        value: float | None = getattr(scores, name)
        return value
    if name.startswith(ON_STAYS_OF):
        return scores.federated_on_references.get(name.removeprefix(ON_STAYS_OF))
    if name == OWN_INTERCEPT:
        return scores.own_intercept
    if name.startswith(OWN_INTERCEPT_ON_STAYS_OF):
        return scores.own_intercept_on_references.get(name.removeprefix(OWN_INTERCEPT_ON_STAYS_OF))
    return scores.references.get(name)


def auroc_where_known(risk: npt.NDArray[np.float64], split: Split, name: str) -> float | None:
    """AUROC of ``risk`` on the stays where reference ``name`` is known."""
    known = ~np.isnan(split.reference_scores[name])
    return exact_auroc(risk[known], split.y[known]) if known.any() else None


def reference_auroc(split: Split, name: str) -> float | None:
    """AUROC of a reference score on the stays where it is known (APACHE is missing for some)."""
    scores = split.reference_scores.get(name)
    if scores is None:
        return None
    known = ~np.isnan(scores)
    if not known.any():
        return None
    return exact_auroc(scores[known], split.y[known])


def _concat(splits: Sequence[Split]) -> Split:
    names = splits[0].reference_scores.keys()
    return Split(
        x=np.concatenate([s.x for s in splits]),
        y=np.concatenate([s.y for s in splits]),
        reference_scores={
            n: np.concatenate([s.reference_scores[n] for s in splits]) for n in names
        },
    )


def _config_for(config: FederationConfig, data_path: Path) -> FederationConfig:
    tree = config.model_dump(mode="json")
    tree["data"] = {"source": "prepared", "path": str(data_path)}
    tree["exchange"] = {"uri": None, "endpoint_url": None, "kms_key_id": None}
    return FederationConfig.model_validate(tree)


def calibration_of(
    risk: npt.NDArray[np.float64], labels: npt.NDArray[np.int8], num_bins: int
) -> Calibration | None:
    """Calibration from the histogram of ``risk``, as a round's evaluation computes it."""
    return calibration_from_histogram(ClassHistogram.from_scores(risk, labels, num_bins))


def _by_site(
    sites: Sequence[SiteData], risk: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[np.float64]]:
    """Cut a prediction over the concatenated test splits back into each site's rows."""
    bounds = np.cumsum([0, *(s.test.num_examples for s in sites)])
    return {s.site_id: risk[bounds[i] : bounds[i + 1]] for i, s in enumerate(sites)}


def _over_stays(
    sites: Sequence[SiteData], by_site: Mapping[str, npt.NDArray[np.float64]]
) -> npt.NDArray[np.float64]:
    """Per-site predictions laid over the concatenated test splits; NaN for a site without."""
    return np.concatenate(
        [
            np.asarray(by_site[s.site_id], np.float64)
            if s.site_id in by_site
            else np.full(s.test.num_examples, np.nan)
            for s in sites
        ]
    )


def test_stay_sites(fold_root: Path) -> npt.NDArray[np.str_]:
    """The hospital of each stay of a fold's concatenated test splits, in ``score_federation``'s
    order (the schema's test row counts, hospitals in ``site_ids`` order)."""
    source = PreparedFolderSource(fold_root)
    rows = {entry.site_id: entry.rows["test"] for entry in source.schema.sites}
    return np.asarray(
        [site for site in source.site_ids() for _ in range(rows[site])], dtype=np.str_
    )


STAYS_FILE = "out_of_fold_stays.parquet"
"""Every test stay's risk under each model, its hospital, fold and outcome (simulation only:
the per-hospital verdict is computed from it, and can be again without training)."""


def write_stays(
    path: Path,
    repeat: int,
    fold: int,
    sites: npt.NDArray[np.str_],
    labels: npt.NDArray[np.int8],
    predicted: Mapping[str, npt.NDArray[np.float64]],
) -> None:
    """Append one fold's stays to ``path`` (rewritten whole: a fold is small)."""
    columns: dict[str, pa.Array] = {
        "repeat": pa.array(np.full(labels.shape[0], repeat, np.int16)),
        "fold": pa.array(np.full(labels.shape[0], fold, np.int16)),
        "site": pa.array(sites.tolist(), type=pa.string()),
        "label": pa.array(labels.astype(np.int8)),
    }
    for name, risk in predicted.items():
        columns[name] = pa.array(np.asarray(risk, np.float64))
    table = pa.table(columns)
    if path.is_file():
        table = pa.concat_tables([pq.read_table(path), table], promote_options="default")
    pq.write_table(table, path)


def own_intercept_predictions(
    trainer: ClientTrainer, sites: Sequence[SiteData], prior_sd: float
) -> dict[str, npt.NDArray[np.float64]]:
    """Each hospital's test risks under the trainer's model with that hospital's intercept
    refitted on its training rows (``fl_client.personalise.refit_intercept``, the step the
    hospitals run); the trainer holds its model again on return."""
    held = trainer.get_weights()
    risks: dict[str, npt.NDArray[np.float64]] = {}
    try:
        for site in sites:
            refit_intercept(trainer, site, prior_sd)
            risks[site.site_id] = np.asarray(trainer.predict_proba(site.test.x), np.float64)
            trainer.set_weights(held)
    finally:
        trainer.set_weights(held)
    return risks


def score_federation(
    config: FederationConfig,
    data_path: Path,
    runs: Path,
    run_id: str,
    *,
    app: FederatedApp = DEFAULT_APP,
    local_only: bool = True,
    progress: EvaluationProgress | None = None,
    keep: bool = True,
) -> tuple[Scores, dict[str, npt.NDArray[np.float64]], npt.NDArray[np.int8]]:
    """One real federation on a prepared folder, scored with its yardsticks on its test split.

    Returns the scores and, for out-of-fold pooling, the federated and pooled models'
    predicted risk and every reference score per test stay, with the labels. Without
    ``keep`` the federation's run folder is removed once its model is read.
    """
    started = time.monotonic()
    fold_config = _config_for(config, data_path)
    events = None if progress is None else _RoundsToProgress(fold_config.rounds, progress)
    result = simulate(fold_config, runs, app=app, run_id=run_id, events=events)
    if not keep:
        shutil.rmtree(result.run_dir, ignore_errors=True)
    source = PreparedFolderSource(data_path)
    sites = [source.load_site(s) for s in source.site_ids()]
    test = _concat([s.test for s in sites])
    trainer = app.build_trainer(test.x.shape[1], fold_config)
    trainer.set_weights(without_scaling(result.final_weights))
    uncalibrated = np.asarray(trainer.predict_proba(test.x), np.float64)
    trainer.set_weights(result.final_weights)
    valid = _concat([s.valid for s in sites])
    validation_loss = (
        log_loss(np.asarray(trainer.predict_proba(valid.x), np.float64), valid.y)
        if valid.num_examples
        else None
    )
    predictions = {
        "federated": np.asarray(trainer.predict_proba(test.x), np.float64),
        "federated_uncalibrated": uncalibrated,
        "pooled": np.asarray(pooled_predictions(app, fold_config, sites), np.float64),
    }
    personalisation = fold_config.personalisation
    if personalisation.local_intercept:
        own = own_intercept_predictions(trainer, sites, personalisation.local_intercept_prior_sd)
        predictions[OWN_INTERCEPT] = _over_stays(sites, own)
    own_risk = predictions.get(OWN_INTERCEPT)
    predictions.update(test.reference_scores)
    bins = fold_config.evaluation.histogram_bins
    local = local_only_predictions(app, fold_config, sites) if local_only else {}
    local_aurocs = [
        a
        for site in sites
        if site.site_id in local
        and (a := exact_auroc(local[site.site_id], site.test.y)) is not None
    ]
    if local_only:
        predictions["local_only"] = _over_stays(sites, local)
    scores = Scores(
        federated=exact_auroc(predictions["federated"], test.y),
        federated_histogram=result.rows[-1].auroc if result.rows else None,
        pooled=exact_auroc(predictions["pooled"], test.y),
        local_only_mean=float(np.mean(local_aurocs)) if local_aurocs else None,
        local_only_sites=len(local_aurocs),
        references={name: reference_auroc(test, name) for name in test.reference_scores},
        test_stays=test.num_examples,
        test_deaths=test.num_positive,
        calibration={name: calibration_of(p, test.y, bins) for name, p in predictions.items()},
        hospitals=compare_hospitals(
            _by_site(sites, predictions["federated"]),
            local,
            {s.site_id: s.test.y for s in sites},
        )
        if local_only
        else None,
        seconds=round(time.monotonic() - started, 1),
        validation_log_loss=validation_loss,
        federated_on_references={
            name: auroc_where_known(predictions["federated"], test, name)
            for name in test.reference_scores
        },
        own_intercept=exact_auroc(own_risk, test.y) if own_risk is not None else None,
        own_intercept_on_references={
            name: auroc_where_known(own_risk, test, name) for name in test.reference_scores
        }
        if own_risk is not None
        else {},
    )
    if progress is not None:
        progress.advance("yardsticks done: pooled" + (" and local-only" if local_only else ""))
    return scores, predictions, test.y


LOSS_CLIP = 1e-7
"""Risks are clipped to [clip, 1 - clip] in a log-loss, so a confident miss is finite."""


def log_loss(risk: npt.NDArray[np.float64], labels: npt.NDArray[np.int8]) -> float:
    """Mean binary log-loss (natural log) of ``risk`` for ``labels``."""
    p = np.clip(risk, LOSS_CLIP, 1 - LOSS_CLIP)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def feature_columns(schema: PreparedSchema, groups: Sequence[str] | None) -> list[int]:
    """Indices of the features in ``groups`` (every feature for None); a group the folder
    lacks is a ConfigError saying how to prepare one that has it."""
    if groups is None:
        return list(range(len(schema.features)))
    present = {f.group for f in schema.features}
    missing = [g for g in groups if g not in present]
    if missing:
        raise ConfigError(
            f"the prepared folder has no {', '.join(missing)} features (it has "
            f"{', '.join(sorted(present))}); prepare it with `fedsilo data prepare --eicu-dir "
            "DIR --features full`"
        )
    return [i for i, f in enumerate(schema.features) if f.group in groups]


def _split_table(schema: PreparedSchema, split: Split, columns: Sequence[int]) -> pa.Table:
    names = [schema.features[i].name for i in columns]
    arrays = [pa.array(split.x[:, i], type=pa.float32()) for i in columns]
    arrays.append(pa.array(split.y.astype(np.int8), type=pa.int8()))
    names.append(LABEL_COLUMN)
    for ref, column in schema.reference_scores.items():
        arrays.append(pa.array(split.reference_scores[ref].astype(np.float64), type=pa.float64()))
        names.append(column)
    return pa.Table.from_arrays(arrays, names=names)


def _take(split: Split, mask: npt.NDArray[np.bool_]) -> Split:
    return Split(
        x=split.x[mask],
        y=split.y[mask],
        reference_scores={k: v[mask] for k, v in split.reference_scores.items()},
    )


VALIDATION_SHARE = 5
"""One in this many of a fold's training rows, dealt per hospital and stratified by label, is
held out as its validation split: what early stopping and the recalibration are fitted on."""


def _validation_mask(rows: Split, site_id: str, fold: int, seed: int) -> npt.NDArray[np.bool_]:
    codes = assign_folds(
        rows.y, seed=seed, site_key=f"{site_id}/validation/{fold}", folds=VALIDATION_SHARE
    )
    return np.asarray(codes == 0, dtype=np.bool_)


def write_fold_folders(
    prepared: Path,
    out: Path,
    *,
    folds: int,
    seed: int,
    feature_groups: Sequence[str] | None = None,
) -> list[Path]:
    """``out/fold_<k>``: prepared folders whose test split is fold k at every hospital.

    Valid holds one in ``VALIDATION_SHARE`` of the other folds' rows (never a test row), train
    the rest. Every hospital of ``prepared`` (all its rows, whatever split they were in) is
    dealt into folds by ``assign_folds`` under ``seed``: the deal depends on the labels alone,
    so every choice of ``feature_groups`` (the columns kept; all for None) gets the same folds.
    """
    source = PreparedFolderSource(prepared)
    schema = source.schema
    columns = feature_columns(schema, feature_groups)
    if out.exists():
        shutil.rmtree(out)
    roots = [out / f"fold_{k}" for k in range(folds)]
    entries: list[list[SiteEntry]] = [[] for _ in range(folds)]
    for site_entry in schema.sites:
        site: SiteData = source.load_site(site_entry.site_id)
        rows = _concat([site.train, site.valid, site.test])
        codes = assign_folds(rows.y, seed=seed, site_key=site_entry.site_id, folds=folds)
        for k, root in enumerate(roots):
            test_mask = codes == k
            rest = _take(rows, ~test_mask)
            valid_mask = _validation_mask(rest, site_entry.site_id, k, seed)
            parts = {
                "train": _take(rest, ~valid_mask),
                "valid": _take(rest, valid_mask),
                "test": _take(rows, test_mask),
            }
            (root / site_entry.folder).mkdir(parents=True)
            for name in SPLIT_NAMES:
                pq.write_table(
                    _split_table(schema, parts[name], columns),
                    root / site_entry.folder / f"{name}.parquet",
                )
            train_pos = parts["train"].num_positive
            one_class = train_pos in (0, parts["train"].num_examples)
            entries[k].append(
                SiteEntry(
                    site_id=site_entry.site_id,
                    folder=site_entry.folder,
                    source_value=site_entry.source_value,
                    rows={n: parts[n].num_examples for n in SPLIT_NAMES},
                    positives={n: parts[n].num_positive for n in SPLIT_NAMES},
                    note="one class only" if one_class else None,
                )
            )
    settings = SplitSettings(
        seed=seed,
        fractions=(
            (1 - 1 / folds) * (1 - 1 / VALIDATION_SHARE),
            (1 - 1 / folds) / VALIDATION_SHARE,
            1 / folds,
        ),
        min_stays_to_split=1,
        stratified_by=f"label; cross-validation fold k of {folds} is test (assign_folds)",
    )
    for k, root in enumerate(roots):
        fold_schema = PreparedSchema.model_validate(
            {
                **schema.model_dump(),
                "sites": [entry.model_dump() for entry in entries[k]],
                "split": settings.model_dump(),
                "features": [schema.features[i].model_dump() for i in columns],
            }
        )
        (root / SCHEMA_FILE).write_text(fold_schema.model_dump_json(indent=2) + "\n")
    return roots


def _out_of_fold(
    predictions: Sequence[Mapping[str, npt.NDArray[np.float64]]],
    labels: Sequence[npt.NDArray[np.int8]],
    num_bins: int,
) -> tuple[dict[str, float | None], dict[str, Calibration | None]]:
    y = np.concatenate(labels)
    figures: dict[str, float | None] = {}
    calibration: dict[str, Calibration | None] = {}
    for name in predictions[0]:
        risk = np.concatenate([p[name] for p in predictions])
        split = Split(x=np.zeros((y.shape[0], 0), np.float32), y=y, reference_scores={name: risk})
        figures[name] = reference_auroc(split, name)
        calibration[name] = calibration_of(risk, y, num_bins)
    return figures, calibration


def cross_validate(
    prepared: Path,
    work: Path,
    config: FederationConfig,
    *,
    folds: int = DEFAULT_FOLDS,
    repeats: int = 1,
    split_seed: int = 0,
    app: FederatedApp = DEFAULT_APP,
    local_only: bool = True,
    progress: EvaluationProgress | None = None,
    keep: bool = False,
    feature_groups: Sequence[str] | None = None,
    label_prefix: str = "",
) -> CrossValidation:
    """``repeats`` x ``folds`` federations; repeat r deals folds with seed ``split_seed + r``.

    ``config`` gives rounds, seed and training; its data section is replaced per fold. The
    fold folders (``work/folds_r<r>``) and run folders (``work/runs``) stay only with ``keep``.
    ``feature_groups`` picks the prepared folder's columns the models train on (all for None).
    """
    if repeats < 1:
        raise ConfigError(f"repeats {repeats}: must be at least 1")
    per_fold: list[Scores] = []
    (work / STAYS_FILE).unlink(missing_ok=True)
    out_of_fold: list[dict[str, float | None]] = []
    out_of_fold_calibration: list[dict[str, Calibration | None]] = []
    for repeat in range(repeats):
        roots = write_fold_folders(
            prepared,
            work / f"folds_r{repeat}",
            folds=folds,
            seed=split_seed + repeat,
            feature_groups=feature_groups,
        )
        predictions, labels = [], []
        for k, root in enumerate(roots):
            label = f"{label_prefix}r{repeat}-f{k}"
            if progress is not None:
                progress.federation_started(label, config.rounds + 1)
            scores, predicted, y = score_federation(
                config,
                root,
                work / "runs",
                label,
                app=app,
                local_only=local_only,
                progress=progress,
                keep=keep,
            )
            if progress is not None:
                progress.federation_finished(label)
            per_fold.append(scores)
            predictions.append(predicted)
            labels.append(y)
            write_stays(work / STAYS_FILE, repeat, k, test_stay_sites(root), y, predicted)
        figures, calibration = _out_of_fold(predictions, labels, config.evaluation.histogram_bins)
        out_of_fold.append(figures)
        out_of_fold_calibration.append(calibration)
        if not keep:
            shutil.rmtree(work / f"folds_r{repeat}", ignore_errors=True)
    if not keep and (work / "runs").is_dir() and not any((work / "runs").iterdir()):
        (work / "runs").rmdir()
    return CrossValidation(folds, repeats, per_fold, out_of_fold, out_of_fold_calibration)
