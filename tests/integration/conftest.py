"""Integration fixtures: moto_server on 127.0.0.1, one AWS account per hospital, and a
``Federation`` that runs ``fedsilo server run`` / ``fedsilo client run`` as OS processes.

The moto_server fixture is a copy of the one in ``tests/exchange/conftest.py`` (with
``--import-mode=importlib`` a sibling conftest cannot be imported, and moving it would touch a
finished package's tests). Every wait polls S3 (state.json, result.json) or a process, never a
fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import yaml

from fl_core.exchange.manifests import FederationState, GlobalManifest, RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.s3_store import S3Store
from fl_core.serialization import decode_weights

REGION = "eu-west-1"
COORDINATOR_KEY = "testing"  # moto maps unknown keys to its default account 123456789012
PROCESS_TIMEOUT_S = 150.0
WAIT_TIMEOUT_S = 90.0
POLL_S = 0.1

# Anything that could make a process reach a real account or a developer's profile.
_UNSET_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


def base_env(tmp: Path) -> dict[str, str]:
    """A process environment with no AWS credentials, profiles or metadata service."""
    env = {k: v for k, v in os.environ.items() if k not in _UNSET_ENV}
    empty = tmp / "no-aws-config"
    env.update(
        {
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": REGION,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def client(
    endpoint: str, service: str = "s3", key: str = COORDINATOR_KEY, account: str | None = None
) -> Any:
    """A boto3 client for moto_server; ``account`` routes IAM calls to that moto account."""
    made = boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key="testing",
    )
    if account is not None:

        def add_header(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        made.meta.events.register("before-sign.*.*", add_header)
    return made


@dataclass(frozen=True)
class AccountKey:
    account_id: str
    access_key_id: str
    secret_access_key: str


def create_account_key(endpoint: str, account_id: str, user: str) -> AccountKey:
    """An IAM user with an access key in moto account ``account_id``.

    moto attributes every request signed with that key to the account (``get_account_id_from``),
    so a hospital process holding it talks S3 as that account, across the account boundary to
    the coordinator's bucket.
    """
    iam = client(endpoint, "iam", account=account_id)
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return AccountKey(account_id, key["AccessKeyId"], key["SecretAccessKey"])


def key_last_used_service(endpoint: str, key: AccountKey) -> str | None:
    iam = client(endpoint, "iam", account=key.account_id)
    used = iam.get_access_key_last_used(AccessKeyId=key.access_key_id)["AccessKeyLastUsed"]
    service = used.get("ServiceName")
    return None if service in (None, "N/A") else str(service)


@dataclass
class Proc:
    """One fedsilo process with its stdout/stderr in files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout_s: float = PROCESS_TIMEOUT_S) -> int:
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit in {timeout_s:.0f} s\n{self.tail()}"
            ) from None

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (``--log-format json`` writes them to stdout)."""
        found = []
        for line in self.stdout().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def tail(self) -> str:
        return (
            f"--- {self.name} rc={self.popen.poll()} stdout ---\n{self.stdout()[-3000:]}\n"
            f"--- {self.name} stderr ---\n{self.stderr()[-3000:]}"
        )


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
    bucket: str = field(default_factory=lambda: f"fedsilo-it-{uuid.uuid4().hex[:12]}")
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        s3 = client(self.endpoint)
        s3.create_bucket(
            Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        # versioned, as in production: every write shows up as a version we can count
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        self.s3 = s3
        self.store = S3Store(self.bucket, self.prefix, client=s3)
        self.exchange = Exchange(self.store, self.federation_id)
        self.hospitals = site_ids(self.settings["data"]["synthetic"]["hospitals"])

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
        stdout_path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.out"
        stderr_path = stdout_path.with_suffix(".err")
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "fedsilo.cli", *args],
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.tmp,
                start_new_session=True,
            )
        proc = Proc(name, popen, stdout_path, stderr_path)
        self.procs.append(proc)
        return proc

    def env_for(self, key: AccountKey | None) -> dict[str, str]:
        env = base_env(self.tmp)
        env["AWS_ACCESS_KEY_ID"] = key.access_key_id if key else COORDINATOR_KEY
        env["AWS_SECRET_ACCESS_KEY"] = key.secret_access_key if key else "testing"
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
        for proc in self.procs:
            proc.kill()

    def logs(self) -> str:
        return "\n".join(proc.tail() for proc in self.procs)

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
        watched = list(watch)
        give_up = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            dead = [p for p in watched if not p.alive()]
            if dead:
                raise AssertionError(
                    f"{dead[0].name} exited while waiting for {what}\n{self.logs()}"
                )
            if time.monotonic() > give_up:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.logs()}"
                )
            time.sleep(POLL_S)

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
            client=client(endpoint or self.endpoint, key=key.access_key_id),
        )

    def key_last_used_service(self, site_id: str) -> str | None:
        return key_last_used_service(self.endpoint, self.keys[site_id])

    def assert_final_matches(self, reference: dict[str, np.ndarray]) -> None:
        assert_models_close(self.final_model(), reference)

    def run_to_end(self, server: Proc, clients: dict[str, Proc]) -> None:
        """Wait for every process; all must exit 0."""
        rc = server.wait()
        assert rc == 0, f"server exited {rc}\n{self.logs()}"
        for site, proc in clients.items():
            rc = proc.wait()
            assert rc == 0, f"{site} exited {rc}\n{self.logs()}"


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


# ---- a fault-injecting HTTP proxy in front of moto_server ---------------------------------

SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>fedsilo-proxy</RequestId>"
    b"</Error>"
)
_HOP_HEADERS = ("transfer-encoding", "connection", "content-length", "server", "date")
FAULT_KINDS = ("slow_down", "reset_before", "reset_after", "cut_body")


class FaultProxy:
    """Forwards HTTP requests to moto_server; every ``every``-th request is faulted, in turn:

    - ``slow_down``: answered 503 SlowDown (S3's throttling), never forwarded;
    - ``reset_before``: the socket is closed before forwarding (a dropped connection);
    - ``reset_after``: forwarded, then the socket closed with no reply (the write landed but
      its reply was lost, so the retry meets its own write);
    - ``cut_body``: forwarded, headers sent and half of the body, then closed (GETs only;
      other requests get ``reset_after``).

    At most ``max_faults`` faults are injected, so a run is slowed, not starved.
    """

    def __init__(self, target: str, every: int = 4, max_faults: int = 40) -> None:
        import http.server
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.every = every
        self.max_faults = max_faults
        self.requests = 0
        self.injected: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _handle(self) -> None:
                proxy.handle(self)

        for method in ("GET", "PUT", "POST", "HEAD", "DELETE"):
            setattr(Handler, f"do_{method}", Handler._handle)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _next_fault(self, method: str) -> str | None:
        with self._lock:
            self.requests += 1
            if self.requests % self.every or sum(self.injected.values()) >= self.max_faults:
                return None
            kind = FAULT_KINDS[(self.requests // self.every) % len(FAULT_KINDS)]
            if kind == "cut_body" and method != "GET":
                kind = "reset_after"
            self.injected[kind] += 1
            return kind

    def handle(self, handler: Any) -> None:
        import http.client

        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        fault = self._next_fault(handler.command)
        if fault == "slow_down":
            handler.send_response(503)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(SLOW_DOWN_BODY)))
            handler.end_headers()
            handler.wfile.write(SLOW_DOWN_BODY)
            return
        if fault == "reset_before":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        upstream = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        headers["Host"] = f"{self.target_host}:{self.target_port}"
        upstream.request(handler.command, handler.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        if fault == "reset_after":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        handler.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in (
                "transfer-encoding",
                "connection",
                "content-length",
                "server",
                "date",
            ):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command == "HEAD":
            return
        if fault == "cut_body" and len(data) > 1:
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
