"""Integration fixtures: moto_server on 127.0.0.1, one AWS account per hospital, and a
``Federation`` that runs ``fedsilo server run`` / ``fedsilo client run`` as OS processes.

moto_server, the offline environment, the processes and the fault proxy come from
``fedsilo.testing`` (shared with chaos and examples/demo_aws.py). Every wait polls S3
(state.json, result.json) or a process, never a fixed sleep.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedsilo.testing.fault_proxy import FaultProxy
from fedsilo.testing.moto_iam import create_user_key
from fedsilo.testing.moto_s3 import FAKE_KEY, create_bucket, moto_client, offline_env
from fedsilo.testing.processes import Proc, ProcessGroup
from fl_core.exchange.manifests import FederationState, GlobalManifest, RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.s3_store import S3Store
from fl_core.serialisation import decode_weights

COORDINATOR_KEY = FAKE_KEY  # moto maps unknown keys to its default account 123456789012
PROCESS_TIMEOUT_S = 150.0
WAIT_TIMEOUT_S = 90.0
POLL_S = 0.1


@dataclass(frozen=True)
class AccountKey:
    account_id: str
    access_key_id: str
    secret_access_key: str


def create_account_key(endpoint: str, account_id: str, user: str) -> AccountKey:
    """An IAM user with an access key in moto account ``account_id``: a hospital process
    holding it talks S3 as that account, across the account boundary to the coordinator's
    bucket."""
    made = create_user_key(endpoint, account_id, user, exist_ok=True)
    return AccountKey(account_id, made.access_key_id, made.secret_access_key)


def key_last_used_service(endpoint: str, key: AccountKey) -> str | None:
    iam = moto_client(endpoint, "iam", account=key.account_id)
    used = iam.get_access_key_last_used(AccessKeyId=key.access_key_id)["AccessKeyLastUsed"]
    service = used.get("ServiceName")
    return None if service in (None, "N/A") else str(service)


def site_ids(count: int) -> list[str]:
    """The synthetic source's site ids."""
    return [f"site-{i:03d}" for i in range(1, count + 1)]


def default_settings(rounds: int = 2, hospitals: int = 4) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "seed": 7,
        "data": {"synthetic": {"hospitals": hospitals, "mean_stays": 60}},
        "round": {
            "min_sites": 2,
            "deadline_s": 60.0,
            "poll_interval_s": 0.1,
            "lease_s": 2.0,
            "below_quorum": "fail",
        },
        "simulation": {"client_timeout_s": 120.0},
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = _merge(out[name], value)
        else:
            out[name] = value
    return out


@dataclass
class Federation:
    """A federation in its own bucket on moto_server, run by separate fedsilo processes."""

    endpoint: str
    tmp: Path
    settings: dict[str, Any]
    keys: dict[str, AccountKey]
    federation_id: str = "fx"
    prefix: str = "exchange"
    bucket: str = ""
    processes: ProcessGroup = field(init=False)

    def __post_init__(self) -> None:
        s3 = moto_client(self.endpoint)
        # versioned, as in production: every write shows up as a version we can count
        self.bucket = create_bucket(s3, self.bucket or None, prefix="fedsilo-it", versioned=True)
        self.s3 = s3
        self.store = S3Store(self.bucket, self.prefix, client=s3)
        self.exchange = Exchange(self.store, self.federation_id)
        self.hospitals = site_ids(self.settings["data"]["synthetic"]["hospitals"])
        self.processes = ProcessGroup(self.tmp, "fedsilo.cli", self.tmp, PROCESS_TIMEOUT_S)

    # ---- config and processes -----------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def config_file(self, endpoint: str | None = None, **changes: Any) -> Path:
        """The YAML config every process reads; ``endpoint`` points one process elsewhere."""
        settings = _merge(self.settings, changes)
        settings = _merge(
            settings,
            {
                "federation_id": self.federation_id,
                "exchange": {"uri": self.uri, "endpoint_url": endpoint or self.endpoint},
            },
        )
        path = self.tmp / f"config-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        return self.processes.spawn(name, args, env)

    def env_for(self, key: AccountKey | None) -> dict[str, str]:
        env = offline_env(self.tmp)
        env["AWS_ACCESS_KEY_ID"] = key.access_key_id if key else COORDINATOR_KEY
        env["AWS_SECRET_ACCESS_KEY"] = key.secret_access_key if key else FAKE_KEY
        return env

    def start_server(
        self, sites: list[str] | None = None, config: Path | None = None, name: str = "server"
    ) -> Proc:
        args = [
            "server",
            "run",
            "--config",
            str(config or self.config_file()),
            "--log-format",
            "json",
        ]
        if sites is not None:
            args += ["--sites", ",".join(sites)]
        return self.spawn(name, args, self.env_for(None))

    def start_client(self, site_id: str, config: Path | None = None) -> Proc:
        args = [
            "client",
            "run",
            "--site-id",
            site_id,
            "--config",
            str(config or self.config_file()),
            "--log-format",
            "json",
        ]
        return self.spawn(site_id, args, self.env_for(self.keys[site_id]))

    def start_clients(self, sites: list[str] | None = None) -> dict[str, Proc]:
        return {site: self.start_client(site) for site in (sites or self.hospitals)}

    def kill_all(self) -> None:
        self.processes.kill_all()

    def logs(self) -> str:
        return self.processes.logs()

    # ---- what S3 holds ---------------------------------------------------------------------

    def state(self) -> FederationState | None:
        found = self.exchange.read_state()
        return None if found is None else found[0]

    def result(self, round_index: int) -> RoundResult | None:
        return self.exchange.read_result(round_index)

    def global_manifest(self, round_index: int) -> GlobalManifest | None:
        return self.exchange.read_global_manifest(round_index)

    def final_model(self) -> dict[str, np.ndarray]:
        manifest = self.global_manifest(self.settings["rounds"] + 1)
        assert manifest is not None and manifest.final, "no final model"
        return decode_weights(self.exchange.read_global_weights(manifest))

    def wait_for(
        self,
        what: str,
        predicate: Callable[[], Any],
        timeout_s: float = WAIT_TIMEOUT_S,
        watch: Iterable[Proc] = (),
    ) -> Any:
        """Poll ``predicate`` until it is truthy; fail early if a watched process exited."""
        return self.processes.wait_for(what, predicate, timeout_s, POLL_S, watch)

    def versions(self, key: str) -> int:
        """How many versions of an exchange key the (versioned) bucket holds."""
        full = f"{self.prefix}/federations/{self.federation_id}/{key}"
        listed = self.s3.list_object_versions(Bucket=self.bucket, Prefix=full)
        return sum(1 for v in listed.get("Versions", []) if v["Key"] == full)

    def store_for(self, site_id: str, endpoint: str | None = None) -> S3Store:
        """An S3Store signed with a site's own account key (how a hospital's writes look)."""
        key = self.keys[site_id]
        return S3Store(
            self.bucket,
            self.prefix,
            client=moto_client(endpoint or self.endpoint, access_key_id=key.access_key_id),
        )

    def key_last_used_service(self, site_id: str) -> str | None:
        return key_last_used_service(self.endpoint, self.keys[site_id])

    def assert_final_matches(self, reference: dict[str, np.ndarray]) -> None:
        assert_models_close(self.final_model(), reference)

    def run_to_end(self, server: Proc, clients: dict[str, Proc]) -> None:
        """Wait for every process; all must exit 0."""
        self.processes.run_to_end(server, clients)


@pytest.fixture(scope="session")
def hospital_keys(moto_server: str) -> dict[str, AccountKey]:
    """One moto account per hospital (and per hostile site), each with its own access key."""
    names = site_ids(4) + [f"bad-{i}" for i in range(1, 16)]
    return {
        name: create_account_key(moto_server, f"{200000000000 + index:012d}", f"fedsilo-{name}")
        for index, name in enumerate(names, start=1)
    }


@pytest.fixture
def make_federation(
    moto_server: str, hospital_keys: dict[str, AccountKey], tmp_path: Path
) -> Iterator[Callable[..., Federation]]:
    """Builds federations in fresh buckets; kills whatever process a test left running."""
    made: list[Federation] = []

    def make(**changes: Any) -> Federation:
        settings = _merge(default_settings(), changes)
        folder = tmp_path / f"fed-{len(made)}"
        folder.mkdir()
        federation = Federation(moto_server, folder, settings, hospital_keys)
        made.append(federation)
        return federation

    yield make
    for federation in made:
        federation.kill_all()


@pytest.fixture(scope="session")
def reference_run(
    moto_server: str, hospital_keys: dict[str, AccountKey], tmp_path_factory: pytest.TempPathFactory
) -> Federation:
    """An uninterrupted run with the default settings: the aggregator and four hospitals as
    separate processes, each hospital in its own account. Training is deterministic per
    (seed, site, round), so its final model is the reference for the fault runs."""
    federation = Federation(
        moto_server, tmp_path_factory.mktemp("reference"), default_settings(), hospital_keys
    )
    try:
        server = federation.start_server()
        clients = federation.start_clients()
        federation.run_to_end(server, clients)
    finally:
        federation.kill_all()
    return federation


@pytest.fixture(scope="session")
def reference_model(reference_run: Federation) -> dict[str, np.ndarray]:
    return reference_run.final_model()


def assert_models_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.fixture
def fault_proxy(moto_server: str) -> Iterator[Callable[..., FaultProxy]]:
    made: list[FaultProxy] = []

    def make(**kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(moto_server, **kwargs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
