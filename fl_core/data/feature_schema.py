"""The federation's published feature schema: every input's name, kind and possible range.

The centre distributes it (``fedsilo data schema --out F``) so that a hospital can check its
prepared folder against what the model expects before it joins (``fedsilo site check``), and
the hospitals bin their data profile on the same edges without agreeing on anything else: the
bins of a feature follow from its kind and range alone. Ranges are what cannot be true, not
what is typical: a value outside one is an error in the data, not a rare patient.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fl_core.errors import ConfigError

FeatureKind: TypeAlias = Literal["numeric", "indicator", "onehot"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValidRange(_Frozen):
    """The values a numeric feature can take at all (both ends included)."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> ValidRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"range [{self.low}, {self.high}] must be finite with low < high")
        return self


class SchemaFeature(_Frozen):
    name: str = Field(min_length=1, max_length=200)
    kind: FeatureKind
    valid_range: ValidRange | None = None
    """Numeric features only; indicators and one-hot columns are 0/1 by their kind."""

    @model_validator(mode="after")
    def _range_only_for_numbers(self) -> SchemaFeature:
        if self.valid_range is not None and self.kind != "numeric":
            raise ValueError(f"feature {self.name!r}: only a numeric feature has a valid_range")
        return self

    def allowed(self) -> tuple[float, float] | None:
        """The closed interval a present value must lie in (None: any finite number)."""
        if self.kind != "numeric":
            return (0.0, 1.0)
        if self.valid_range is None:
            return None
        return (self.valid_range.low, self.valid_range.high)


class FeatureSchema(_Frozen):
    """The model's inputs in column order, as the federation publishes them."""

    format: Literal["fedsilo-feature-schema"] = "fedsilo-feature-schema"
    format_version: Literal[1] = 1
    features: tuple[SchemaFeature, ...] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _distinct_names(self) -> FeatureSchema:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            repeated = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"feature {repeated!r} is listed twice")
        return self

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


# The possible ranges a data source knows, by feature name. eICU: ages outside 0-120 are
# dropped and weights/heights outside these bounds masked when a folder is prepared
# (fl_core.data.eicu.cohort); the Glasgow Coma Scale components are bounded by definition.
KNOWN_RANGES: dict[str, tuple[float, float]] = {
    "age": (0.0, 120.0),
    "admissionweight": (20.0, 400.0),
    "admissionheight": (100.0, 250.0),
    "eyes": (1.0, 4.0),
    "motor": (1.0, 6.0),
    "verbal": (1.0, 5.0),
    "gcs": (3.0, 15.0),
    "apache_iva_logit": (-10.0, 10.0),
}

_NAMED_INDICATORS = frozenset(
    {
        "male",
        "ventilated",
        "intubated",
        "vent",
        "dialysis",
        "gcs_unable_meds",
        "teaching",
        # eICU's admission group (fl_core.data.eicu.features.ADMISSION_FLAGS and _DERIVED)
        "elective_surgery",
        "thrombolytics",
        "mi_within_6_months",
        "internal_mammary_graft",
        "icu_readmission",
        "active_treatment",
        "aids",
        "hepatic_failure",
        "lymphoma",
        "metastatic_cancer",
        "leukemia",
        "immunosuppression",
        "cirrhosis",
        "diabetes",
        "operative",
        "acute_mi",
    }
)
"""0/1 flags without the ``_missing`` suffix: the synthetic source's and eICU's."""
_NAMED_ONEHOT = frozenset(
    {"admit_emergency", "admit_operating_room", "admit_floor", "unit_micu", "unit_sicu", "unit_ccu"}
)
"""The synthetic source's one-hot groups (admission source, unit type)."""
_ONEHOT_NAME = re.compile(r"^[^=]+=.+$")


def schema_from_entries(entries: Iterable[tuple[str, FeatureKind]]) -> FeatureSchema:
    """A schema from (name, kind) pairs, numeric ranges taken from what the source knows."""
    features = []
    for name, kind in entries:
        known = KNOWN_RANGES.get(name) if kind == "numeric" else None
        valid = None if known is None else ValidRange(low=known[0], high=known[1])
        features.append(SchemaFeature(name=name, kind=kind, valid_range=valid))
    try:
        return FeatureSchema(features=tuple(features))
    except ValidationError as err:
        raise ConfigError(f"feature schema: {err.errors()[0]['msg']}") from err


def kind_from_name(name: str) -> FeatureKind:
    """A feature's kind as fedsilo's data sources name their columns.

    ``<column>=<value>`` is one-hot, ``<column>_missing`` and the named flags are
    indicators, anything else numeric. Every hospital derives the same kinds from the
    same names, so their profile bins agree without a schema file.
    """
    if _ONEHOT_NAME.match(name) or name in _NAMED_ONEHOT:
        return "onehot"
    if name.endswith("_missing") or name in _NAMED_INDICATORS:
        return "indicator"
    return "numeric"


def schema_from_names(names: Iterable[str]) -> FeatureSchema:
    """The schema of a model's ordered input names (kinds by ``kind_from_name``)."""
    return schema_from_entries((name, kind_from_name(name)) for name in names)


def schema_of_prepared(root: Path) -> FeatureSchema:
    """The schema of a prepared folder, kinds as ``schema.json`` records them."""
    from fl_core.data.prepared import read_schema

    prepared = read_schema(root)
    return schema_from_entries((f.name, f.kind) for f in prepared.features)


def read_feature_schema(path: Path) -> FeatureSchema:
    """Parse a schema file the centre distributed; any problem is a ConfigError naming it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return FeatureSchema.model_validate(raw)
    except FileNotFoundError as err:
        raise ConfigError(
            f"{path}: not found; ask the coordinating centre for the federation's feature "
            "schema (fedsilo data schema --out FILE)"
        ) from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable feature schema ({err})") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: field {where!r}: {first['msg']}") from err


def write_feature_schema(schema: FeatureSchema, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(schema.to_json(), encoding="utf-8")
    tmp.replace(path)
