"""A federation of separate ``fedsilo server run`` / ``client run`` processes for the suite.

The exchange is a local folder or a bucket on moto_server (127.0.0.1); every process reads
one YAML config, as an ECS task would. Waits poll the exchange with a bound, never a fixed
sleep; every process is killed when the scenario ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaos.hooks import JOURNAL_ENV, KILL_ENV
from fedsilo.testing.moto_s3 import FAKE_KEY, offline_env
from fedsilo.testing.processes import Proc, ProcessGroup, ProcessWaitError
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.store import ObjectStore

REPO = Path(__file__).resolve().parents[1]
FEDERATION_ID = "chaos"
SEED = 11
WAIT_S = 240.0
POLL_S = 0.05


class ChaosError(ProcessWaitError):
    """The suite itself could not go on (a process hung, a wait ran out)."""


def process_env(folder: Path) -> dict[str, str]:
    """No real AWS account, profile or metadata service can be reached from a process."""
    env = offline_env(folder)
    env.update({"AWS_ACCESS_KEY_ID": FAKE_KEY, "AWS_SECRET_ACCESS_KEY": FAKE_KEY})
    env["PYTHONPATH"] = str(REPO)
    env.pop(KILL_ENV, None)
    return env


def site_ids(count: int) -> list[str]:
    """The synthetic source's site ids."""
    return [f"site-{i:03d}" for i in range(1, count + 1)]


class Zygote:
    """The fork server of ``chaos.zygote``: one aggregator life per ``start``."""

    def __init__(self, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "chaos.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.strip())

    def _expect(self, word: str, timeout_s: float) -> list[str]:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise ChaosError(f"the fork server said nothing for {timeout_s:.0f} s") from None
        parts = line.split()
        if not parts or parts[0] != word:
            raise ChaosError(f"the fork server said {line!r}, expected {word}")
        return parts

    def start(self, argv: list[str], env: dict[str, str], out: Path, err: Path) -> int:
        assert self.popen.stdin is not None
        request = {"argv": argv, "env": env, "stdout": str(out), "stderr": str(err)}
        self.popen.stdin.write(json.dumps(request) + "\n")
        self.popen.stdin.flush()
        return int(self._expect("started", 60)[1])

    def wait(self, timeout_s: float = WAIT_S) -> int:
        """The exit status of the running child (minus the signal if it was killed)."""
        return int(self._expect("exited", timeout_s)[2])

    def poll(self, timeout_s: float) -> int | None:
        """The child's exit status if it ends within ``timeout_s``, else None."""
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            return None
        parts = line.split()
        if len(parts) != 3 or parts[0] != "exited":
            raise ChaosError(f"the fork server said {line!r}, expected exited")
        return int(parts[2])

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


@dataclass
class Federation:
    """One federation's config, processes and exchange, in ``folder``."""

    folder: Path
    uri: str
    store: ObjectStore
    hospitals: int = 3
    rounds: int = 3
    endpoint_url: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessGroup(self.folder, "chaos.shim", REPO, WAIT_S)
        self.exchange = Exchange(self.store, FEDERATION_ID)
        self.honest = site_ids(self.hospitals)
        self.journal = self.folder / "writes.journal"

    # ---- config and processes -----------------------------------------------------------

    def config_file(self, endpoint_url: str | None = None) -> Path:
        settings: dict[str, Any] = {
            "federation_id": FEDERATION_ID,
            "rounds": self.rounds,
            "seed": SEED,
            "data": {"synthetic": {"hospitals": self.hospitals, "mean_stays": 40}},
            "round": {
                "min_sites": 2,
                "deadline_s": 600.0,  # rounds close when everyone answered, never by the clock
                "poll_interval_s": 0.05,
                "lease_s": 0.5,
                "checkpoint_interval_s": 0.2,
                "below_quorum": "fail",
            },
            "simulation": {"client_timeout_s": 600.0},
            "exchange": {"uri": self.uri, "endpoint_url": endpoint_url or self.endpoint_url},
        }
        for section, values in self.settings.items():
            settings.setdefault(section, {}).update(values)
        path = self.folder / f"config-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    def env(self, kill_rule: dict[str, Any] | None = None) -> dict[str, str]:
        env = process_env(self.folder)
        env[JOURNAL_ENV] = str(self.journal)
        if kill_rule is not None:
            env[KILL_ENV] = json.dumps(kill_rule)
        return env

    def spawn(self, name: str, args: list[str], kill_rule: dict[str, Any] | None = None) -> Proc:
        return self.processes.spawn(name, args, self.env(kill_rule))

    def server_args(
        self, sites: list[str] | None = None, endpoint_url: str | None = None
    ) -> list[str]:
        args = ["server", "run", "--config", str(self.config_file(endpoint_url))]
        return args + (["--sites", ",".join(sites)] if sites else [])

    def start_server(
        self,
        sites: list[str] | None = None,
        kill_rule: dict[str, Any] | None = None,
        name: str = "server",
        endpoint_url: str | None = None,
    ) -> Proc:
        return self.spawn(name, self.server_args(sites, endpoint_url), kill_rule)

    def start_client(
        self, site: str, kill_rule: dict[str, Any] | None = None, endpoint_url: str | None = None
    ) -> Proc:
        args = ["client", "run", "--site-id", site, "--config", str(self.config_file(endpoint_url))]
        return self.spawn(site, args, kill_rule)

    def start_clients(self) -> dict[str, Proc]:
        return {site: self.start_client(site) for site in self.honest}

    def kill_all(self) -> None:
        self.processes.kill_all()

    def logs(self) -> str:
        return self.processes.logs()

    def run_to_end(self, server: Proc, clients: dict[str, Proc]) -> None:
        self.processes.run_to_end(server, clients)

    # ---- what the exchange holds -----------------------------------------------------------

    def wait_for(
        self, what: str, predicate: Callable[[], Any], watch: list[Proc] | None = None
    ) -> Any:
        return self.processes.wait_for(what, predicate, WAIT_S, POLL_S, watch or [])

    def final_sha256(self) -> str | None:
        manifest = self.exchange.read_global_manifest(self.rounds + 1)
        return manifest.sha256 if manifest is not None and manifest.final else None

    def ledger_ok(self) -> bool:
        return self.ledger_problem() is None

    def ledger_problem(self) -> str | None:
        """``fedsilo ledger verify``'s one line when it fails, else None. An aggregator killed
        before its first write leaves no state, model or entry: nothing to verify, nothing
        broken (the suite made this federation, so its id and exchange are right)."""
        from fl_core.errors import LedgerVerificationError
        from fl_core.exchange.ledger import verify_ledger

        try:
            report = verify_ledger(self.exchange)
        except LedgerVerificationError:
            return None
        return None if report.ok else report.summary()

    def creations(self, suffix: str) -> dict[str, int]:
        """How many distinct contents were written under each key ending in ``suffix``."""
        seen: dict[str, set[str]] = {}
        if self.journal.exists():
            for line in self.journal.read_text().splitlines():
                key, digest = line.rsplit(" ", 1)
                if key.endswith(suffix):
                    seen.setdefault(key, set()).add(digest)
        return {key: len(digests) for key, digests in seen.items()}


@contextlib.contextmanager
def running(federation: Federation) -> Iterator[Federation]:
    """Kill every process of ``federation`` when the block ends, however it ends."""
    try:
        yield federation
    finally:
        federation.kill_all()
