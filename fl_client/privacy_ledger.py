"""The hospital's privacy-loss ledger: what every study it serves has spent, in one file.

Each federation's DP-SGD accountant (``fl_client.private``) counts that study's epsilon at
its own delta. The site policy's ``epsilon_budget`` bounds the site's loss over all studies
together by basic composition: epsilons add, and so do deltas. That is an upper bound for any
mix of mechanisms on the same patients; it is looser than composing the studies' Renyi
curves, and it needs nothing but each study's (epsilon, delta).

The file lives in the hospital's state folder beside the accountants. Two federations' client
processes may run at once from that folder, so every read-modify-write holds an exclusive
``fcntl`` lock on a sibling lock file, and the file is replaced atomically. A round's spend is
reserved before it trains (``reserve``), so two processes cannot both take the last of the
budget; a study's recorded epsilon only grows, so a restored or restarted accountant cannot
hand budget back. A ledger that cannot be read stops the hospital: deleting it would forget
the loss already spent.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fl_core.errors import ConfigError
from fl_core.privacy import within_target

LEDGER_FILE = "privacy_ledger.json"
LOCK_FILE = "privacy_ledger.lock"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StudySpend(_Frozen):
    """One study's privacy loss at this site so far (its accountant's, or a reservation)."""

    epsilon: float = Field(ge=0, allow_inf_nan=False)
    delta: float = Field(ge=0, lt=1)
    updated_unix: float = Field(allow_inf_nan=False)


class LedgerDocument(_Frozen):
    version: Literal[1] = 1
    studies: dict[str, StudySpend] = Field(default_factory=dict)

    def total_epsilon(self) -> float:
        return sum(spend.epsilon for spend in self.studies.values())

    def total_delta(self) -> float:
        return sum(spend.delta for spend in self.studies.values())


class PrivacyLedger:
    """The ledger file of one state folder (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LEDGER_FILE
        self.lock_path = state_dir / LOCK_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def read(self) -> LedgerDocument:
        """The ledger as stored (empty when the folder has none yet)."""
        if not self.path.is_file():
            return LedgerDocument()
        try:
            return LedgerDocument.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError) as err:
            problem = str(err).splitlines()[0]
            raise ConfigError(
                f"privacy ledger {self.path} cannot be read ({problem}); restore it from "
                "backup: deleting it would forget the privacy loss already spent"
            ) from err

    def _write(self, document: LedgerDocument) -> None:
        scratch = self.path.with_suffix(".json.tmp")
        with open(scratch, "w") as handle:
            handle.write(json.dumps(document.model_dump(mode="json"), indent=1, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, self.path)

    def reserve(
        self, federation_id: str, epsilon: float, delta: float, budget: float | None
    ) -> float | None:
        """Record that ``federation_id`` will have spent ``epsilon`` (at ``delta``), unless the
        sum over every study would then exceed ``budget``: then nothing is written and the
        sum it would have reached is returned."""
        with self._locked():
            document = self.read()
            old = document.studies.get(federation_id)
            epsilon = max(epsilon, old.epsilon if old else 0.0)
            delta = max(delta, old.delta if old else 0.0)
            others = sum(s.epsilon for f, s in document.studies.items() if f != federation_id)
            if budget is not None and not within_target(
                epsilon=others + epsilon, target_epsilon=budget
            ):
                return others + epsilon
            studies = dict(document.studies)
            studies[federation_id] = StudySpend(
                epsilon=epsilon, delta=delta, updated_unix=time.time()
            )
            self._write(LedgerDocument(studies=studies))
            return None
