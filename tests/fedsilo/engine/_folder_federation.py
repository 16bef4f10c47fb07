"""A federation over a folder exchange whose aggregator and hospitals are ``fedsilo`` processes.

Each hospital may read its own site policy; ``approval`` and ``write_policy`` write one that
approves a config's study and its default model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fedsilo.engine.app import default_model
from fedsilo.testing.moto_s3 import offline_env
from fedsilo.testing.processes import Proc, ProcessGroup
from fl_core.config import FederationConfig, load_config
from fl_core.data.synthetic import FEATURES
from fl_core.errors import ObjectNotFoundError
from fl_core.exchange.manifests import RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.uri import open_store
from fl_core.models import model_weights
from fl_core.study import study_hash, weights_architecture

TIMEOUT_S = 240.0
POLICY_ENV = ("FEDSILO_SITE_POLICY", "FEDSILO_SITE_POLICY_JSON", "FEDSILO_STATE_DIR")


class FolderFederation:
    """One federation's config, processes and exchange folder under ``tmp``."""

    def __init__(self, tmp: Path, federation_id: str, **settings: Any) -> None:
        self.tmp = tmp
        self.federation_id = federation_id
        self.exchange_dir = tmp / "exchange"
        self.exchange_dir.mkdir(parents=True, exist_ok=True)
        tree: dict[str, Any] = {
            "federation_id": federation_id,
            "rounds": 2,
            "data": {"synthetic": {"hospitals": 2, "mean_stays": 60}},
            "training": {"hidden_sizes": [8], "min_local_steps": 2},
            "evaluation": {"histogram_bins": 20},
            "round": {"min_sites": 1, "deadline_s": 120.0, "poll_interval_s": 0.05},
            "simulation": {"client_timeout_s": TIMEOUT_S},
            "exchange": {"uri": self.exchange_dir.as_uri()},
        }
        for dotted, value in settings.items():
            node = tree
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        self.config_path = tmp / f"{federation_id}.yaml"
        self.config_path.write_text(yaml.safe_dump(tree))
        self.config = load_config(self.config_path)
        self.group = ProcessGroup(tmp, "fedsilo.cli", tmp, TIMEOUT_S)
        self.exchange = Exchange(open_store(self.exchange_dir.as_uri()), federation_id)

    def env(self) -> dict[str, str]:
        return offline_env(self.tmp, unset=POLICY_ENV)

    def start_server(self) -> Proc:
        args = ["server", "run", "--config", str(self.config_path), "--log-format", "json"]
        return self.group.spawn(f"{self.federation_id}-server", args, self.env())

    def start_client(self, site_id: str, policy: Path | None, *extra: str) -> Proc:
        args = ["client", "run", "--site-id", site_id, "--config", str(self.config_path)]
        args += ["--log-format", "json", *extra]
        if policy is not None:
            args += ["--site-policy", str(policy)]
        return self.group.spawn(f"{self.federation_id}-{site_id}", args, self.env())

    def answered(self, round_index: int, site_id: str) -> bool:
        """Whether the site's manifest-only answer (a decline) is in the exchange."""
        try:
            self.exchange.read_update_manifest_bytes(round_index, site_id)
        except ObjectNotFoundError:
            return False
        return True

    def result(self, round_index: int) -> RoundResult | None:
        return self.exchange.read_result(round_index)

    def finish(self, *procs: Proc) -> None:
        for proc in procs:
            rc = proc.wait()
            assert rc == 0, self.group.logs()


def approval(config: FederationConfig, **terms: Any) -> dict[str, Any]:
    """A policy's entry approving ``config``'s study and its default model."""
    model = default_model(len(FEATURES), config)
    return {
        "federation_id": config.federation_id,
        "config_hashes": [study_hash(config, FEATURES)],
        "architecture_digests": [weights_architecture(model_weights(model))],
        **terms,
    }


def write_policy(path: Path, site_id: str, *studies: dict[str, Any], **terms: Any) -> Path:
    path.write_text(yaml.safe_dump({"site_id": site_id, "studies": list(studies), **terms}))
    return path
