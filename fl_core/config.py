"""Typed federation config: one frozen pydantic model, loaded from YAML/TOML plus overrides.

Only entrypoints read files and the environment; everything below them receives a
``FederationConfig``. A wrong key or value raises ``ConfigError`` (exit 2) with one line per
problem naming the field and what to do.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fl_core.errors import ConfigError
from fl_core.ids import check_federation_id
from fl_core.privacy import DpFedAvgConfig, DpSgdConfig, check_dp_settings


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoundConfig(_Frozen):
    """When a round closes: everyone answered, or the deadline with a quorum."""

    min_sites: int = Field(default=2, ge=1, description="quorum of accepted updates")
    deadline_s: float = Field(default=600.0, gt=0, description="seconds a round stays open")
    below_quorum: Literal["extend", "fail"] = "extend"
    extend_s: float = Field(default=300.0, gt=0)
    max_extensions: int = Field(default=3, ge=0)
    poll_interval_s: float = Field(default=0.05, gt=0, le=60)
    lease_s: float = Field(default=30.0, gt=0, description="aggregator lease on state.json")
    checkpoint_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="while a round is open, write its decisions to state.json at most this "
        "often (0: after every batch of answers); answers decided since the last write are "
        "admitted again after a crash, from the same write-once files",
    )
    max_weight_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="the largest share of a training round's FedAvg weight one hospital may "
        "have, computed from the invited hospitals' registered rows (the largest are trimmed, "
        "the rest keep their counts); 0.5: no single member decides the model, even of two, "
        "at the cost of trimming a hospital that truly holds most of the data; 1.0: plain "
        "FedAvg. Not applied under secure aggregation (fl_server.weight_bounds)",
    )


class AdmissionConfig(_Frozen):
    max_update_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_manifest_bytes: int = Field(default=1024 * 1024, gt=0)
    max_num_examples: int = Field(default=10_000_000, gt=0)


class StudyTraining(_Frozen):
    """The local training settings every hospital shares: part of what a study approves.

    ``TrainingConfig`` adds the per-machine ``device``, which a study does not cover (a
    hospital may train on its GPU or its CPUs under the same approval).
    """

    local_epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)
    min_local_steps: int = Field(
        default=20,
        ge=0,
        description="optimizer steps a hospital makes per round at least: one whose "
        "local_epochs x ceil(rows / batch_size) falls short runs more whole epochs, so that "
        "every hospital takes a comparable step and FedAvg's weighting by rows decides its "
        "influence (0: off)",
    )
    learning_rate: float = Field(default=0.05, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    optimizer: Literal["adam", "sgd"] = "sgd"
    class_weighting: Literal["balanced", "none"] = "none"
    max_pos_weight: float = Field(default=20.0, ge=1)
    hidden_sizes: tuple[int, ...] = (32,)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    linear_skip: bool = Field(
        default=False,
        description="add a linear term of the inputs to the network's logit (wide and deep): "
        "an input that is already a risk's logit, such as APACHE IVa's, keeps its "
        "discrimination; no effect without hidden layers",
    )

    logit_offset: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="an input that is already a risk's logit (apache_iva_logit): round 1's "
        "model is that prior model exactly, and training learns corrections to it (a "
        "consortium customising APACHE IVa); adds the linear term",
    )

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_layers(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(size < 1 for size in value):
            raise ValueError("every hidden size must be >= 1")
        return value


class TrainingConfig(StudyTraining):
    """Local training of the default tabular trainer, identical at every hospital.

    The defaults were chosen by ``bench/defaults_sweep.py`` on the eICU-CRD Demo's training
    rows (186 hospitals of ~11 stays, 0-2 deaths each; docs/model-quality.md). Plain SGD,
    not Adam: Adam rescales every coordinate of an eight-row gradient to about the learning
    rate, so each tiny hospital moved the model as far as a large one, in noisy directions.
    No class weighting: a hospital with one death would weight it up to 20-fold, and the
    federation's risks came out too high (a model read as a probability must not do that).
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"


class SyntheticDataConfig(_Frozen):
    hospitals: int = Field(default=20, ge=2, le=10_000)
    mean_stays: int = Field(default=1500, ge=20, description="average stays per hospital")
    seed: int | None = Field(default=None, description="defaults to the federation seed")


class TwinDataConfig(_Frozen):
    """The eICU-shaped synthetic twin: four tables written, then read by the real reader."""

    hospitals: int = Field(default=40, ge=2, le=10_000)
    stays: int = Field(default=20_000, ge=20, description="unit stays over all hospitals")
    min_stays: int = Field(default=1, ge=1, description="hospitals with fewer are kept out")
    seed: int | None = Field(default=None, description="defaults to the federation seed")
    cache_dir: Path | None = Field(
        default=None, description="where twins are kept (default ~/.cache/fedsilo/twins)"
    )

    @model_validator(mode="after")
    def _enough_stays(self) -> TwinDataConfig:
        if self.stays < self.hospitals:
            raise ValueError(f"data.twin.stays {self.stays} < hospitals {self.hospitals}")
        return self


class DataConfig(_Frozen):
    source: Literal["synthetic", "prepared", "twin"] = "synthetic"
    path: Path | None = Field(default=None, description="prepared per-hospital folders")
    synthetic: SyntheticDataConfig = SyntheticDataConfig()
    twin: TwinDataConfig = TwinDataConfig()

    @model_validator(mode="after")
    def _path_matches_source(self) -> DataConfig:
        if self.source == "prepared":
            if self.path is None:
                raise ValueError("data.path is required when data.source is 'prepared'")
            if not self.path.is_dir():
                raise ValueError(
                    f"data.path {self.path} is not a folder; run `fedsilo data prepare` first"
                )
        return self


class EvaluationConfig(_Frozen):
    histogram_bins: int = Field(default=2000, ge=10, le=100_000)
    early_stopping_patience: int = Field(
        default=3,
        ge=0,
        description="training stops once the hospitals' summed validation loss has not "
        "improved for this many rounds, so raising rounds does not over-fit small hospitals "
        "(0: every round runs)",
    )
    recalibrate: bool = Field(
        default=True,
        description="fit Platt scaling of the final model on the hospitals' summed validation "
        "histograms and publish the model with it (risks move, their order does not)",
    )


class FedAvgStrategy(_Frozen):
    """FedAvg weighted by each hospital's number of training examples."""

    name: Literal["fedavg"] = "fedavg"


class FedAvgMStrategy(_Frozen):
    """FedAvg with server momentum on the pseudo-gradient (Hsu et al. 2019)."""

    name: Literal["fedavgm"]
    server_learning_rate: float = Field(default=1.0, gt=0)
    momentum: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="0.5, not 0.9: at server rate 1 a momentum of 0.9 takes steps up to 10x the "
        "round's mean update and oscillated (bench/server_opt_bench.py)",
    )


class FedOptStrategy(_Frozen):
    """Adaptive server optimizers on the pseudo-gradient (Reddi et al. 2021)."""

    name: Literal["fedadam", "fedyogi", "fedadagrad"]
    server_learning_rate: float = Field(
        default=0.1,
        gt=0,
        description="each coordinate's step is about this at first (Reddi et al. 2021 tune it "
        "in 10^-2..1; 0.1 learns as fast as FedAvg here: bench/server_opt_bench.py)",
    )
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0, description="adaptivity floor (epsilon)")
    bias_correction: bool = Field(
        default=True,
        description="divide the moments by Adam's zero-start factors (1 - beta**round)",
    )


class FedProxStrategy(_Frozen):
    """FedAvg on the server; each hospital adds (mu/2)||w - w_global||^2 to its loss."""

    name: Literal["fedprox"]
    mu: float = Field(default=0.01, gt=0)


class ScaffoldStrategy(_Frozen):
    """SCAFFOLD: control variates travel as extra tensors of the global model and updates."""

    name: Literal["scaffold"]
    server_learning_rate: float = Field(default=1.0, gt=0)


class MedianStrategy(_Frozen):
    """Coordinate-wise median of the updates (robust to a minority of hostile hospitals)."""

    name: Literal["median"]
    chunk_elements: int = Field(default=1 << 20, ge=1, description="parameters per pass")


class TrimmedMeanStrategy(_Frozen):
    """Coordinate-wise mean after dropping the ``trim_fraction`` largest and smallest."""

    name: Literal["trimmed_mean"]
    trim_fraction: float = Field(default=0.2, ge=0, lt=0.5)
    chunk_elements: int = Field(default=1 << 20, ge=1, description="parameters per pass")


class KrumStrategy(_Frozen):
    """Krum / Multi-Krum (Blanchard et al. 2017): keep the updates closest to their peers."""

    name: Literal["krum", "multikrum"]
    byzantine: int = Field(default=1, ge=0, description="hostile hospitals tolerated (f)")
    selected: int | None = Field(
        default=None, ge=1, description="multikrum: updates averaged (default n - f)"
    )
    chunk_elements: int = Field(default=1 << 20, ge=1, description="parameters per pass")


class NormBoundedStrategy(_Frozen):
    """FedAvg of deltas each clipped to ``clip_norm`` (bounds what one hospital can move)."""

    name: Literal["norm_bounded"]
    clip_norm: float = Field(default=1.0, gt=0)


StrategyConfig = Annotated[
    FedAvgStrategy
    | FedAvgMStrategy
    | FedOptStrategy
    | FedProxStrategy
    | ScaffoldStrategy
    | MedianStrategy
    | TrimmedMeanStrategy
    | KrumStrategy
    | NormBoundedStrategy,
    Field(discriminator="name"),
]


class PersonalisationConfig(_Frozen):
    """After the last round each hospital adapts the global model to its own data.

    ``finetune_epochs`` fine-tunes every weight; ``local_intercept`` refits only the model's
    intercept on the hospital's training rows (calibration-in-the-large, as a hospital
    recalibrates a risk score to its own mortality), shrunk toward the global model's by a
    normal prior of ``local_intercept_prior_sd`` on the log-odds shift. Hospitals differ most
    by a shift of their baseline risk that no shared feature explains; one parameter per
    hospital learns it without the over-fitting of a fine-tuned network.
    """

    finetune_epochs: int = Field(default=0, ge=0, description="0: no fine-tuning")
    local_intercept: bool = Field(
        default=False,
        description="refit the model's intercept at each hospital after the last round",
    )
    local_intercept_prior_sd: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="sd of the normal prior on a hospital's log-odds shift (shrinks the shift "
        "of a hospital with few deaths toward the global model's)",
    )

    @property
    def adapts(self) -> bool:
        """Whether hospitals adapt the final model at all (and report it)."""
        return self.finetune_epochs > 0 or self.local_intercept


class SecAggConfig(_Frozen):
    """Secure aggregation (Bonawitz et al. 2017): the aggregator learns only the weighted sum.

    Updates are quantised to integers mod ``2**modulus_bits`` after clipping every delta
    coordinate to ``[-clip, clip]``; the fractional bits are derived from the modulus, the
    clip, ``admission.max_num_examples`` and the number of hospitals so the sum cannot wrap.
    """

    enabled: bool = False
    modulus_bits: int = Field(default=64, ge=24, le=64, description="masks live mod 2**bits")
    clip: float = Field(default=4.0, gt=0, description="|delta| per coordinate is clipped to it")
    threshold: int | None = Field(
        default=None,
        ge=2,
        description="Shamir threshold t (default n - floor(n/3): a third may drop out)",
    )
    advert_timeout_s: float = Field(
        default=60.0, gt=0, description="how long the aggregator waits for key adverts"
    )
    unmask_timeout_s: float = Field(
        default=60.0, gt=0, description="how long the aggregator waits for unmask answers"
    )


SECAGG_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
"""Strategies that are functions of the weighted mean of the updates (what secagg reveals)."""


class PrivacyConfig(_Frozen):
    """What hospitals reveal: secure aggregation (and differential privacy)."""

    secagg: SecAggConfig = SecAggConfig()
    dp_sgd: DpSgdConfig | None = None  # sample-level DP at each hospital (fl_core.privacy)
    dp_fedavg: DpFedAvgConfig | None = None  # client-level DP at the aggregator


class SimulationConfig(_Frozen):
    workers: int | None = Field(default=None, ge=1, description="default: one per core")
    engine: Literal["process", "mpi"] = "process"
    client_timeout_s: float = Field(default=3600.0, gt=0)


HISTORY_RETENTION_DAYS = 2190
"""Six years, HIPAA's retention of documentation: how long the federation's history (global
models, round results, ledger entries) is kept unalterable unless the config says otherwise."""


class ExchangeConfig(_Frozen):
    uri: str | None = Field(default=None, description="file://DIR or s3://bucket/prefix")
    endpoint_url: str | None = None
    kms_key_id: str | None = None
    ledger_retention_days: int = Field(
        default=HISTORY_RETENTION_DAYS,
        ge=1,
        le=36_500,
        description="global models, round results and ledger entries are written under S3 "
        "Object Lock (COMPLIANCE) this long; env FEDSILO_LEDGER_RETENTION_DAYS for services",
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith(("file://", "s3://")):
            raise ValueError("use file:///absolute/path or s3://bucket/prefix")
        return value


class FederationConfig(_Frozen):
    federation_id: str = "demo"
    rounds: int = Field(default=10, ge=1, le=100_000)
    seed: int = 0
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    round: RoundConfig = RoundConfig()
    admission: AdmissionConfig = AdmissionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    strategy: StrategyConfig = FedAvgStrategy()
    personalisation: PersonalisationConfig = Field(
        default=PersonalisationConfig(),
        validation_alias=AliasChoices("personalisation", "personalization"),
    )
    """Also read as ``personalization`` (``AMERICAN_KEYS``)."""
    privacy: PrivacyConfig = PrivacyConfig()
    simulation: SimulationConfig = SimulationConfig()
    exchange: ExchangeConfig = ExchangeConfig()

    @field_validator("federation_id")
    @classmethod
    def _valid_federation_id(cls, value: str) -> str:
        try:
            return check_federation_id(value)
        except ConfigError as err:
            raise ValueError(str(err)) from err

    @model_validator(mode="after")
    def _quorum_fits(self) -> FederationConfig:
        if self.data.source in ("synthetic", "twin"):
            section = self.data.source
            hospitals = getattr(self.data, section).hospitals
            if self.round.min_sites > hospitals:
                raise ValueError(
                    f"round.min_sites {self.round.min_sites} > data.{section}.hospitals "
                    f"{hospitals}; lower round.min_sites or add hospitals"
                )
        return self

    @model_validator(mode="after")
    def _secagg_composes(self) -> FederationConfig:
        if self.privacy.secagg.enabled and self.strategy.name not in SECAGG_STRATEGIES:
            raise ValueError(
                f"privacy.secagg cannot run with strategy.name {self.strategy.name!r}: the "
                "aggregator sees only the sum of the updates, and this strategy needs each "
                f"update; use one of {', '.join(SECAGG_STRATEGIES)} or turn secagg off"
            )
        if self.privacy.secagg.enabled and self.privacy.dp_fedavg is not None:
            raise ValueError(
                "privacy.secagg and privacy.dp_fedavg exclude each other: DP-FedAvg clips each "
                "hospital's update at the aggregator, which under secure aggregation sees only "
                "the sum; keep secagg with privacy.dp_sgd (noise at the hospitals), or drop one"
            )
        return self

    @model_validator(mode="after")
    def _privacy_can_be_met(self) -> FederationConfig:
        hospitals = self.data.synthetic.hospitals if self.data.source == "synthetic" else None
        try:
            check_dp_settings(
                self.privacy.dp_fedavg,
                rounds=self.rounds,
                strategy=self.strategy.name,
                num_sites=hospitals,
                secure_aggregation=self.privacy.secagg.enabled,
            )
        except ConfigError as err:
            raise ValueError(str(err)) from err
        return self


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing --config FILE")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            loaded: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            loaded = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: use a .yaml, .yml, .json or .toml file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {path} does not parse: {err}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top")
    return loaded


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node = child
    node[leaf] = value


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: the dotted field, what is wrong, and the value given."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "config"
        if problem["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown key in {source}; remove it or fix its spelling")
            continue
        message = problem["msg"].removeprefix("Value error, ")
        given = problem.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"{field}: {message}{shown}; fix it in {source}")
    return "\n".join(lines)


AMERICAN_KEYS = {"personalization": "personalisation"}
"""Top-level config keys also accepted in American spelling, in a file or a dotted override."""


def _british(key: str) -> str:
    head, dot, rest = key.partition(".")
    return AMERICAN_KEYS.get(head, head) + dot + rest


def load_config(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> FederationConfig:
    """Defaults, then the file, then command-line overrides (dotted keys)."""
    read: dict[str, Any] = _read_file(path) if path is not None else {}
    tree = {_british(key): value for key, value in read.items()}
    if len(tree) < len(read):
        raise ConfigError(
            f"config {path} sets a section under both spellings "
            f"({', '.join(f'{a}/{b}' for a, b in AMERICAN_KEYS.items())}); keep one"
        )
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, _british(dotted), value)
    source = f"config {path}" if path is not None else "the command line"
    try:
        return FederationConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source)) from err
