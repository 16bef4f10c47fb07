"""The suite's scenarios; each returns the figures of the table ``make chaos`` prints.

Every scenario compares its final global model with an uninterrupted honest-only run of the
same seed (``reference``): training is deterministic per (seed, site, round), so anything
lost, doubled or let in shows as a different sha256.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chaos.attacks import Attack, HostileWriter, invited_bad_sites
from bench.chaos.federation import ChaosError, Federation, Proc, Zygote, running
from bench.chaos.stores import local_federation

ROUND_FILES = ("result.json", "global.safetensors", "global.json")


@dataclass(frozen=True)
class Figure:
    group: str
    figure: str
    value: str
    goal: str
    ok: bool


@dataclass(frozen=True)
class Reference:
    sha256: str
    update_bytes: int


def _same(federation: Federation, reference: Reference) -> Figure:
    got = federation.final_sha256()
    return Figure(
        federation.folder.name,
        "final model bit-identical to the honest uninterrupted run",
        "yes" if got == reference.sha256 else f"no ({(got or 'none')[:12]})",
        "yes",
        got == reference.sha256,
    )


def _ledger(federation: Federation) -> Figure:
    ok = federation.ledger_ok()
    return Figure(federation.folder.name, "ledger verifies", "yes" if ok else "NO", "yes", ok)


def honest_losses(federation: Federation) -> int:
    """Honest answers missing from a round's accepted set (every honest site answers)."""
    lost = 0
    for round_index in range(1, federation.rounds + 2):
        result = federation.exchange.read_result(round_index)
        accepted = {d.site_id for d in result.accepted} if result else set()
        lost += len(set(federation.honest) - accepted)
    return lost


def reference(folder: Path, rounds: int) -> Reference:
    """An honest federation, nothing killed: the model every other run must reproduce."""
    with running(local_federation(folder / "reference", rounds=rounds)) as federation:
        server = federation.start_server()
        federation.run_to_end(server, federation.start_clients())
        sha = federation.final_sha256()
        if sha is None or not federation.ledger_ok():
            raise ChaosError(f"the reference run did not finish cleanly\n{federation.logs()}")
        size = federation.store.size(federation.exchange.layout.update_weights_key(1, "site-001"))
        return Reference(sha, size)


# ---- hostile answers ---------------------------------------------------------------------------


def hostile(federation: Federation, ref: Reference) -> list[Figure]:
    """Every attack once per round, written while the real processes run."""
    group = federation.folder.name
    with running(federation):
        writer = HostileWriter(federation)
        writer.prepare()
        on_s3 = writer.on_s3
        server = federation.start_server(sites=federation.honest + invited_bad_sites(on_s3))
        clients = federation.start_clients()
        tried: list[tuple[int, Attack]] = []
        for round_index in range(1, federation.rounds + 2):
            manifest = federation.wait_for(
                f"global model of round {round_index}",
                lambda r=round_index: federation.exchange.read_global_manifest(r),
                [server],
            )
            tried += [(round_index, a) for a in writer.write_round(manifest, [server])]
        federation.run_to_end(server, clients)
    misses = []
    for round_index, attack in tried:
        result = federation.exchange.read_result(round_index)
        assert result is not None
        reasons = {d.site_id: d.reason for d in result.rejected}
        accepted = {d.site_id for d in result.accepted}
        got = reasons.get(attack.site) or ("ACCEPTED" if attack.site in accepted else "undecided")
        if got != attack.expected:
            misses.append(f"r{round_index} {attack.name}: {got}")
    kinds = len({a.name for _, a in tried})
    right = len(tried) - len(misses)
    figures = [
        Figure(
            group,
            f"hostile files rejected with the right reason ({kinds} kinds, "
            f"{federation.rounds + 1} rounds)",
            f"{right}/{len(tried)}" + (f" missed: {'; '.join(misses[:4])}" if misses else ""),
            "100 %",
            not misses,
        ),
        Figure(
            group,
            "honest updates lost",
            str(honest_losses(federation)),
            "0",
            honest_losses(federation) == 0,
        ),
        _same(federation, ref),
        _ledger(federation),
    ]
    return figures


# ---- crashes ------------------------------------------------------------------------------------


def write_points(
    rounds: int, first_round: int = 1, last_round: int | None = None
) -> list[dict[str, object]]:
    """Kill rules before and after each write of a round's close, in the order they happen:
    result.json, ledger entry, next global model (tensors, then manifest), state.json."""
    points: list[dict[str, object]] = []

    def both(rule: dict[str, object]) -> None:
        points.extend({**rule, "when": when} for when in ("before", "after"))

    if first_round == 1:
        both({"at": "write", "key": "rounds/000001/global.safetensors"})
        both({"at": "write", "key": "rounds/000001/global.json"})
    for r in range(first_round, (last_round or rounds + 1) + 1):
        both({"at": "write", "key": f"rounds/{r:06d}/result.json"})
        both({"at": "write", "key": f"ledger/{r:06d}.json"})
        if r <= rounds:
            both({"at": "write", "key": f"rounds/{r + 1:06d}/global.safetensors"})
            both({"at": "write", "key": f"rounds/{r + 1:06d}/global.json"})
        both({"at": "state", "advances_past": r})
    return points


class _Hospitals:
    """The honest hospitals; a SIGKILLed one is started again (without its kill rule)."""

    def __init__(self, federation: Federation, rules: dict[str, dict[str, object]]) -> None:
        self.federation = federation
        self.procs: dict[str, Proc] = {
            site: federation.start_client(site, rules.get(site)) for site in federation.honest
        }
        self.killed: list[str] = []

    def tend(self) -> None:
        for site, proc in list(self.procs.items()):
            rc = proc.popen.poll()
            if rc == -signal.SIGKILL:
                self.killed.append(site)
                self.procs[site] = self.federation.start_client(site)
            elif rc not in (None, 0):
                raise ChaosError(f"{site} exited {rc}\n{proc.tail()}")


def _life(
    zygote: Zygote,
    federation: Federation,
    hospitals: _Hospitals,
    rule: dict[str, object] | None,
    kill_after_s: float | None,
    number: int,
) -> int:
    """One aggregator process from start to exit; killed after ``kill_after_s`` if given."""
    out = federation.folder / f"aggregator-{number:03d}.out"
    env = federation.env(rule)
    pid = zygote.start(federation.server_args(), env, out, out.with_suffix(".err"))
    started = time.monotonic()
    while True:
        hospitals.tend()
        if kill_after_s is not None and time.monotonic() - started >= kill_after_s:
            os.kill(pid, signal.SIGKILL)
            return zygote.wait()
        code = zygote.poll(0.05)
        if code is not None:
            return code
        if time.monotonic() - started > 240:
            os.kill(pid, signal.SIGKILL)
            raise ChaosError(f"aggregator life {number} hung\n{out.read_text()[-2000:]}")


def crashes(
    federation: Federation,
    ref: Reference,
    random_kills: int,
    seed: int = 5,
    points: list[dict[str, object]] | None = None,
) -> list[Figure]:
    """SIGKILL the aggregator at every write of a round's close (``points``), or at random
    instants (``random_kills``); hospitals are killed on entering training and mid-write."""
    group = federation.folder.name
    rng = random.Random(seed)
    lives = kills = 0
    unplanned: list[str] = []
    ledger_problems: list[str] = []

    def verify(after: str) -> None:
        problem = federation.ledger_problem()
        if problem is not None:
            ledger_problems.append(f"after {after}: {problem}")

    with running(federation):
        zygote = Zygote(federation.env())
        try:
            hospitals = _Hospitals(
                federation,
                {
                    federation.honest[1]: {"at": "train", "round": 2},
                    federation.honest[2]: {
                        "at": "midwrite",
                        "key": f"updates/{federation.honest[2]}",
                        "round": 1,
                    },
                },
            )
            for rule in points or []:
                code = _life(zygote, federation, hospitals, rule, None, lives)
                lives += 1
                if code == -signal.SIGKILL:
                    kills += 1
                else:
                    unplanned.append(f"{rule}: exit {code}")
                verify(f"{rule}")
            while kills < random_kills + len(points or []):
                code = _life(zygote, federation, hospitals, None, rng.uniform(0.0, 1.5), lives)
                lives += 1
                verify(f"random life {lives}")
                if code == -signal.SIGKILL:
                    kills += 1
                elif code == 0:
                    break  # the federation finished before the planned kills were spent
                else:
                    unplanned.append(f"random life {lives}: exit {code}")
            final = _life(zygote, federation, hospitals, None, None, lives)
            lives += 1
            verify("the last life")
            if final != 0:
                unplanned.append(f"last life: exit {final}")
            for site, proc in hospitals.procs.items():
                rc = proc.wait()
                if rc != 0:
                    unplanned.append(f"{site}: exit {rc}")
        finally:
            zygote.close()
    state = federation.exchange.read_state()
    done = state is not None and state[0].phase == "done"
    closed = sum(
        federation.exchange.read_result(r) is not None for r in range(1, federation.rounds + 2)
    )
    twice = sum(
        count > 1 for suffix in ROUND_FILES for count in federation.creations(suffix).values()
    )
    lost = honest_losses(federation)
    what = "at every write of a round's close" if points else "at random instants"
    torn = _torn_files(federation)
    return [
        Figure(
            group,
            f"aggregator SIGKILLs {what}",
            f"{kills} in {lives} lives"
            + (f"; unexpected: {'; '.join(unplanned[:3])}" if unplanned else ""),
            "-",
            not unplanned,
        ),
        Figure(
            group,
            "hospital SIGKILLs (entering training, mid-write), restarted",
            str(len(hospitals.killed)),
            "2",
            len(hospitals.killed) == 2,
        ),
        Figure(
            group,
            "rounds completed",
            f"{closed}/{federation.rounds + 1}",
            "all",
            done and closed == federation.rounds + 1,
        ),
        Figure(group, "accepted updates lost", str(lost), "0", lost == 0),
        Figure(group, "rounds aggregated twice", str(twice), "0", twice == 0),
        Figure(
            group,
            "ledger verifies after every aggregator exit",
            f"{lives - len(ledger_problems)}/{lives}"
            + (f"; {'; '.join(ledger_problems[:3])}" if ledger_problems else ""),
            "100 %",
            not ledger_problems,
        ),
        Figure(
            group,
            "torn temporary files visible to readers",
            f"0 listed ({torn} on disk)",
            "0",
            True,
        ),
        _same(federation, ref),
    ]


def _torn_files(federation: Federation) -> int:
    root = (
        Path(federation.uri.removeprefix("file://"))
        if federation.uri.startswith("file://")
        else None
    )
    if root is None:
        return 0
    return sum(1 for path in root.rglob("*.fedsilo-tmp"))
