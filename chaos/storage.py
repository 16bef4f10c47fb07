"""Two aggregators on one exchange, storage faults against moto_server, and bad tables.

The fault proxy is the integration tests' own (``tests/integration/conftest.py``): it sits
between a process and moto_server and answers every n-th request with 503 SlowDown, a
dropped connection before or after forwarding, or a body cut in half.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from chaos.federation import ChaosError, Federation, process_env, running
from chaos.hooks import JOURNAL_ENV
from chaos.scenarios import Figure, Reference, honest_losses
from chaos.stores import s3_federation, versions
from fedsilo.testing.fault_proxy import FaultProxy
from fedsilo.testing.moto_s3 import moto_client
from fedsilo.testing.processes import Proc
from fl_core.exchange.s3_store import S3Store

WRITE_ONCE = ("global.json", "global.safetensors", "result.json", ".safetensors", ".json")


def _double_published(federation: Federation) -> int:
    """Write-once keys (global models, results, ledger, updates) with more than one version."""
    layout = federation.exchange.layout
    store = federation.store
    assert isinstance(store, S3Store)
    doubled = 0
    for key in store.list_keys(layout.root + "/"):
        if key.endswith("state.json") or "/registry/" in key:
            continue
        doubled += versions(federation, key) > 1
    return doubled


def one_line(proc_out: str) -> str | None:
    lines = [line for line in proc_out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if "Traceback" in proc_out or len(errors) != 1:
        return None
    return errors[0]


def _aggregated(journal: Path) -> bool:
    """Whether the aggregator that journalled to ``journal`` wrote any round artefact."""
    return journal.exists() and any(
        key.endswith(("/result.json", "/state.json"))
        for key, _ in (line.rsplit(" ", 1) for line in journal.read_text().splitlines())
    )


def two_aggregators(folder: Path, endpoint: str, rounds: int, ref: Reference) -> list[Figure]:
    """Two ``server run`` at once on a new federation, and a third started mid-run.

    The third starts while round 2 is collecting: one hospital dies on entering round 2's
    training (a kill rule), so the round cannot close; once the state shows round 2
    collecting and that hospital dead, the third is started, and the hospital is restarted
    only after the third has exited. An aggregator that exits 0 without having written a
    round artefact (it found the federation done) is neither "ran" nor "refused": the
    scenario's setup failed.
    """
    federation = s3_federation(folder / "two-aggregators", endpoint, rounds=rounds)
    group = federation.folder.name
    held = federation.honest[-1]
    hold = {"at": "train", "round": 2}

    def spawn(name: str) -> tuple[Proc, Path]:
        journal = federation.folder / f"{name}.journal"
        env = {**federation.env(), JOURNAL_ENV: str(journal)}
        return federation.processes.spawn(name, federation.server_args(), env), journal

    def round_2_held() -> bool:
        found = federation.exchange.read_state()
        collecting = found is not None and found[0].phase == "collecting"
        in_round_2 = collecting and found is not None and found[0].round_index == 2
        return in_round_2 and clients[held].popen.poll() == -signal.SIGKILL

    with running(federation):
        (first, first_journal), (second, second_journal) = (
            spawn("aggregator-a"),
            spawn("aggregator-b"),
        )
        clients = {s: federation.start_client(s) for s in federation.honest if s != held}
        clients[held] = federation.start_client(held, hold)
        federation.wait_for("round 2 collecting, held by a hospital", round_2_held)
        third, third_journal = spawn("aggregator-c")
        third_code = third.wait()
        clients[held] = federation.start_client(held)
        codes = [first.wait(), second.wait(), third_code]
        for site, proc in clients.items():
            if proc.wait() != 0:
                raise ChaosError(f"{site} failed\n{federation.logs()}")
    procs = ((first, first_journal), (second, second_journal), (third, third_journal))
    ran, refused, idle = [], [], []
    for (proc, journal), code in zip(procs, codes, strict=True):
        line = one_line(proc.err.read_text() + proc.out.read_text())
        if code == 0 and _aggregated(journal):
            ran.append(proc.name)
        elif code == 0:
            idle.append(proc.name)
        elif code == 5 and line is not None and "only one" in line:  # both of its messages
            refused.append(proc.name)
    doubled = _double_published(federation)
    return [
        Figure(
            group,
            "scenario setup: aggregators that exited 0 without aggregating (started after "
            "the federation was done)",
            ", ".join(idle) or "none",
            "none",
            not idle,
        ),
        Figure(
            group,
            "aggregators started on one exchange (2 at once, 1 while round 2 collects): "
            "ran / refused (exit 5)",
            f"{len(ran)} / {len(refused)}",
            "1 / 2",
            len(ran) == 1 and len(refused) == 2,
        ),
        Figure(group, "double-published objects (S3 versions > 1)", str(doubled), "0", not doubled),
        *_ledger_and_final_model(federation, ref),
    ]


def _ledger_and_final_model(federation: Federation, ref: Reference) -> list[Figure]:
    """The ledger verifies; the final model is the uninterrupted run's, bit for bit."""
    group = federation.folder.name
    ok = federation.ledger_ok()
    sha = federation.final_sha256()
    return [
        Figure(group, "ledger verifies", "yes" if ok else "NO", "yes", ok),
        Figure(
            group,
            "final model bit-identical to the uninterrupted run",
            "yes" if sha == ref.sha256 else "no",
            "yes",
            sha == ref.sha256,
        ),
    ]


def storage_faults(folder: Path, endpoint: str, rounds: int, ref: Reference) -> list[Figure]:
    """503 SlowDown, dropped connections and cut bodies between the processes and S3."""
    federation = s3_federation(folder / "flaky-s3", endpoint, rounds=rounds)
    group = federation.folder.name
    server_proxy = FaultProxy(endpoint, every=4, max_faults=60)
    client_proxy = FaultProxy(endpoint, every=3, max_faults=30)
    try:
        with running(federation):
            server = federation.start_server(endpoint_url=server_proxy.url)
            flaky = federation.honest[0]
            clients = {flaky: federation.start_client(flaky, endpoint_url=client_proxy.url)}
            clients.update({s: federation.start_client(s) for s in federation.honest if s != flaky})
            federation.run_to_end(server, clients)
    finally:
        server_proxy.close()
        client_proxy.close()
    injected: dict[str, int] = {}
    for proxy in (server_proxy, client_proxy):
        for kind, count in proxy.injected.items():
            injected[kind] = injected.get(kind, 0) + count
    shown = ", ".join(f"{k} {v}" for k, v in injected.items())
    lost = honest_losses(federation)
    doubled = _double_published(federation)
    return [
        Figure(group, "faults injected, all retried (botocore standard mode)", shown, "-", True),
        Figure(group, "accepted updates lost", str(lost), "0", lost == 0),
        Figure(group, "write-once objects written twice", str(doubled), "0", not doubled),
        *_ledger_and_final_model(federation, ref),
        store_timeouts(folder, endpoint),
        *vanished_bucket(folder, endpoint),
    ]


def store_timeouts(folder: Path, endpoint: str, objects: int = 8) -> Figure:
    """Requests that stall past the read timeout, at the store (in this process: the
    commands' 60 s timeout is not configurable, so a process-level stall would cost minutes).

    Every third request is held 1.5 s against a 0.5 s read timeout, then forwarded anyway:
    botocore times out and retries, and a stalled PUT lands late, beside its retry.
    """
    from botocore.config import Config

    class StallProxy(FaultProxy):
        stalls = 0

        def handle(self, handler: object) -> None:
            with self._lock:
                self.requests += 1
                stall = self.requests % 3 == 0
                self.stalls += stall
            if stall:
                time.sleep(1.5)
            with contextlib.suppress(OSError):  # the client gave up on this one
                super().handle(handler)

    federation = s3_federation(folder / "timeouts", endpoint)
    store = federation.store
    assert isinstance(store, S3Store)
    proxy = StallProxy(endpoint, every=10**9, max_faults=0)
    try:
        client = moto_client(
            proxy.url,
            config=Config(
                retries={"mode": "standard", "max_attempts": 8},
                read_timeout=0.5,
                connect_timeout=0.5,
                s3={"addressing_style": "path"},
            ),
        )
        flaky = S3Store(store.bucket, store.prefix, client=client)
        payloads = {f"timeouts/{i}.bin": bytes([i]) * (1000 + i) for i in range(objects)}
        for key, data in payloads.items():
            flaky.put_new(key, data)
        intact = sum(flaky.get(key) == data for key, data in payloads.items())
        single = sum(versions(federation, key) == 1 for key in payloads)
    finally:
        proxy.close()
    ok = intact == single == objects and proxy.stalls > 0
    return Figure(
        "s3-timeouts",
        "requests stalled past a 0.5 s read timeout (store level): objects intact, written once",
        f"{proxy.stalls} stalls; {intact}/{objects} intact, {single}/{objects} one version",
        "all",
        ok,
    )


def _delete_bucket(store: S3Store) -> None:
    """Empty the versioned bucket and delete it, while processes keep writing to it."""
    client = store.client
    for _ in range(50):
        listed = client.list_object_versions(Bucket=store.bucket)
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for kind in ("Versions", "DeleteMarkers")
            for v in listed.get(kind, [])
        ]
        for start in range(0, len(doomed), 1000):
            client.delete_objects(
                Bucket=store.bucket, Delete={"Objects": doomed[start : start + 1000]}
            )
        try:
            client.delete_bucket(Bucket=store.bucket)
            return
        except client.exceptions.ClientError:
            time.sleep(0.05)
    raise ChaosError(f"could not delete bucket {store.bucket}")


def vanished_bucket(folder: Path, endpoint: str) -> list[Figure]:
    """The bucket is deleted in round 2: every process stops with one line naming it."""
    federation = s3_federation(folder / "vanished-bucket", endpoint, rounds=3)
    group = federation.folder.name
    store = federation.store
    assert isinstance(store, S3Store)
    with running(federation):
        server = federation.start_server()
        clients = federation.start_clients()
        federation.wait_for(
            "round 2's global model",
            lambda: federation.exchange.read_global_manifest(2),
            [server],
        )
        _delete_bucket(store)
        procs = [server, *clients.values()]
        codes = [p.wait(timeout_s=180) for p in procs]
    named = 0
    for proc, code in zip(procs, codes, strict=True):
        line = one_line(proc.err.read_text() + proc.out.read_text())
        if code not in (0, None) and line is not None and store.bucket in line:
            named += 1
    return [
        Figure(
            group,
            "bucket deleted mid-run: processes that stop with one line naming it",
            f"{named}/{len(procs)} (exit codes {sorted(set(codes))})",
            "all",
            named == len(procs),
        )
    ]


# ---- bad tables at `fedsilo data prepare` --------------------------------------------------------


def _good_table(rows_per_site: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 3 * rows_per_site
    return pd.DataFrame(
        {
            "hospital": np.repeat(["a", "b", "c"], rows_per_site),
            "age": rng.normal(60, 10, n).round(1),
            "heart_rate": rng.normal(80, 10, n).round(),
            "died": rng.integers(0, 2, n).astype(float),
        }
    )


def _bad_tables(folder: Path) -> list[tuple[str, Path, str, str, str]]:
    """(case, file, label column, expected outcome, text the output must hold)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = []

    def table(name: str, frame: pd.DataFrame) -> Path:
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        return path

    good = _good_table()
    path = table("good", good)
    cases.append(("missing column", path, "dead", "exit 2", "'dead' is not a column"))
    frame = good.copy()
    frame["died"] = np.nan
    cases.append(("no label in any row", table("no-labels", frame), "died", "exit 2", "'died'"))
    frame = good.copy()
    frame["died"] = np.where(frame["died"] > 0, "maybe", "unsure")
    cases.append(("non-numeric label", table("text-label", frame), "died", "exit 2", "'died'"))
    cases.append(("zero rows", table("empty", good.iloc[:0]), "died", "exit 2", "'died'"))
    frame = good.copy()
    frame.loc[::7, "died"] = np.nan
    cases.append(
        ("some NaN labels", table("nan-labels", frame), "died", "rows dropped", "label_missing")
    )
    frame = good.copy()
    frame["heart_rate"] = [f"hr{i}?" for i in range(len(frame))]
    cases.append(
        (
            "non-numeric feature",
            table("text-feature", frame),
            "died",
            "column left out",
            "heart_rate",
        )
    )
    frame = good.copy()
    frame.loc[frame["hospital"] == "c", "died"] = np.nan
    cases.append(
        (
            "a site with zero rows",
            table("site-no-rows", frame),
            "died",
            "site kept out",
            "kept out c: 0 rows",
        )
    )
    frame = good.copy()
    frame.loc[frame["hospital"] == "c", "died"] = 0.0
    cases.append(
        (
            "a site with one class",
            table("one-class", frame),
            "died",
            "site kept out",
            "kept out c: one class",
        )
    )
    huge = table("two-gib", good)
    with open(huge, "r+b") as handle:
        handle.truncate(2 * 1024**3)  # sparse: nothing is written to disk
    cases.append(("a 2 GiB file", huge, "died", "exit 2", "over the 1 GiB limit"))
    return cases


def bad_data(folder: Path) -> list[Figure]:
    """Each bad table through the real command: refused with one line, or reported."""
    fedsilo = Path(sys.executable).with_name("fedsilo")
    figures = []
    out = folder / "prepared"
    for case, path, label, expected, needle in _bad_tables(folder):
        done = subprocess.run(
            [
                str(fedsilo), "data", "prepare", "--csv", str(path), "--site-column", "hospital",
                "--label-column", label, "--min-stays", "10", "--out", str(out / path.stem),
            ],
            capture_output=True,
            text=True,
            env={**process_env(folder), "COLUMNS": "200"},
            timeout=120,
            check=False,
        )  # fmt: skip
        output = done.stdout + done.stderr
        if expected == "exit 2":
            line = one_line(output)
            ok = done.returncode == 2 and line is not None and path.name in line and needle in line
            value = (
                f"exit 2, one line naming {path.name} and {needle}"
                if ok
                else f"exit {done.returncode}: {output.strip()[-120:]}"
            )
        else:
            ok = done.returncode == 0 and needle in output.replace("\n", " ")
            value = (
                f"exit {done.returncode}, {expected}"
                if ok
                else f"exit {done.returncode}: {output[-90:]}"
            )
        figures.append(Figure("data-prepare", f"{case} ({expected})", value, expected, ok))
    return figures
