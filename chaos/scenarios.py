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
from dataclasses import dataclass, field
from pathlib import Path

from chaos.attacks import FOREIGN, Attack, HostileWriter, invited_bad_sites
from chaos.federation import ChaosError, Federation, Zygote, running
from chaos.stores import local_federation, s3_federation
from fedsilo.testing.processes import Proc

ROUND_FILES = ("result.json", "global.safetensors", "global.json")
"""Written once per round by its close; with the ledger entries, what "aggregated twice"
would write twice."""


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
        if got == "undecided" and result.foreign_keys > 0:
            got = FOREIGN
        if got != attack.expected:
            misses.append(f"r{round_index} {attack.name}: {got}")
    kinds = len({a.name for _, a in tried})
    lost = honest_losses(federation)
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
        Figure(group, "honest updates lost", str(lost), "0", lost == 0),
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


@dataclass
class CrashTally:
    """What one or more crash runs counted."""

    federations: int = 0
    lives: int = 0
    kills: int = 0
    hospital_kills: int = 0
    rounds_closed: int = 0
    rounds_planned: int = 0
    finished: int = 0
    lost: int = 0
    twice: int = 0
    identical: int = 0
    torn_listed: int = 0
    torn_on_disk: int = 0
    unplanned: list[str] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)

    def figures(self, group: str, what: str) -> list[Figure]:
        runs = f" over {self.federations} federations" if self.federations > 1 else ""
        problems = self.ledger_problems
        return [
            Figure(
                group,
                f"aggregator SIGKILLs {what}{runs}",
                f"{self.kills} in {self.lives} lives"
                + (f"; unexpected: {'; '.join(self.unplanned[:3])}" if self.unplanned else ""),
                "-",
                not self.unplanned,
            ),
            Figure(
                group,
                "hospital SIGKILLs (entering training; writing its answer), restarted",
                str(self.hospital_kills),
                str(2 * self.federations),
                self.hospital_kills == 2 * self.federations,
            ),
            Figure(
                group,
                "rounds completed",
                f"{self.rounds_closed}/{self.rounds_planned}",
                "all",
                self.rounds_closed == self.rounds_planned and self.finished == self.federations,
            ),
            Figure(group, "accepted updates lost", str(self.lost), "0", self.lost == 0),
            Figure(group, "rounds aggregated twice", str(self.twice), "0", self.twice == 0),
            Figure(
                group,
                "ledger verifies after every aggregator exit",
                f"{self.lives - len(problems)}/{self.lives}"
                + (f"; {'; '.join(problems[:3])}" if problems else ""),
                "100 %",
                not problems,
            ),
            Figure(
                group,
                "torn temporary files visible to readers",
                f"{self.torn_listed} listed ({self.torn_on_disk} left on disk, unlisted)",
                "0",
                self.torn_listed == 0,
            ),
            Figure(
                group,
                "final model bit-identical to the uninterrupted run",
                f"{self.identical}/{self.federations}",
                "all",
                self.identical == self.federations,
            ),
        ]


def crashes(
    federation: Federation,
    ref: Reference,
    tally: CrashTally,
    random_kills: int = 0,
    seed: int = 5,
    points: list[dict[str, object]] | None = None,
) -> None:
    """SIGKILL the aggregator at every write of a round's close (``points``), then at random
    instants until ``random_kills`` more kills or the federation ends; hospitals are killed on
    entering training (round 2) and half-way through writing their round-1 answer."""
    rng = random.Random(seed)
    lives = kills = 0

    def verify(after: str) -> None:
        problem = federation.ledger_problem()
        if problem is not None:
            tally.ledger_problems.append(f"after {after}: {problem}")

    with running(federation):
        zygote = Zygote(federation.env())
        try:
            hospitals = _Hospitals(federation, _hospital_rules(federation))
            for rule in points or []:
                code = _life(zygote, federation, hospitals, rule, None, tally.lives + lives)
                lives += 1
                if code == -signal.SIGKILL:
                    kills += 1
                else:
                    tally.unplanned.append(f"{rule}: exit {code}")
                verify(f"{rule}")
            planned = kills + random_kills
            while kills < planned:
                delay = rng.uniform(0.0, 1.5)
                code = _life(zygote, federation, hospitals, None, delay, tally.lives + lives)
                lives += 1
                verify(f"random life {tally.lives + lives}")
                if code == -signal.SIGKILL:
                    kills += 1
                elif code == 0:
                    break  # the federation finished before the planned kills were spent
                else:
                    tally.unplanned.append(f"random life {lives}: exit {code}")
            final = _life(zygote, federation, hospitals, None, None, tally.lives + lives)
            lives += 1
            verify("the last life")
            if final != 0:
                tally.unplanned.append(f"last life: exit {final}")
            for site, proc in hospitals.procs.items():
                rc = proc.wait()
                if rc != 0:
                    tally.unplanned.append(f"{site}: exit {rc}")
        finally:
            zygote.close()
    state = federation.exchange.read_state()
    torn = _torn_files(federation)
    tally.federations += 1
    tally.lives += lives
    tally.kills += kills
    tally.hospital_kills += len(hospitals.killed)
    tally.rounds_planned += federation.rounds + 1
    tally.rounds_closed += sum(
        federation.exchange.read_result(r) is not None for r in range(1, federation.rounds + 2)
    )
    tally.finished += state is not None and state[0].phase == "done"
    tally.lost += honest_losses(federation)
    ledger = {k: n for k, n in federation.creations(".json").items() if "/ledger/" in k}
    tally.twice += sum(
        count > 1
        for counts in [*(federation.creations(suffix) for suffix in ROUND_FILES), ledger]
        for count in counts.values()
    )
    tally.identical += federation.final_sha256() == ref.sha256
    tally.torn_listed += torn[0]
    tally.torn_on_disk += torn[1]


def _hospital_rules(federation: Federation) -> dict[str, dict[str, object]]:
    """One hospital dies entering round 2's training, another while writing its round-1
    answer: half-way through the temporary file in a folder; in S3, whose PUT is atomic (an
    object is whole or absent), just after the PUT landed, before the hospital noted it."""
    third = federation.honest[2]
    if federation.uri.startswith("s3://"):
        key = federation.exchange.layout.update_weights_key(1, third)
        torn: dict[str, object] = {"at": "write", "key": key, "when": "after"}
    else:
        torn = {"at": "midwrite", "key": f"updates/{third}", "round": 1}
    return {federation.honest[1]: {"at": "train", "round": 2}, third: torn}


def random_crashes(folder: Path, ref: Reference, rounds: int, kills: int) -> list[Figure]:
    """``kills`` SIGKILLs at random instants, over as many federations as that takes."""
    tally = CrashTally()
    number = 0
    while tally.kills < kills:
        number += 1
        federation = local_federation(folder / f"kill-at-random-{number}", rounds=rounds)
        crashes(federation, ref, tally, random_kills=kills - tally.kills, seed=number)
    return tally.figures("kill-at-random", "at random instants")


def write_crashes(
    folder: Path,
    ref: Reference,
    rounds: int,
    last_round: int | None,
    random_kills: int = 0,
    endpoint: str | None = None,
) -> list[Figure]:
    """One SIGKILL before and after every write of each round's close (through
    ``last_round``), in order; then ``random_kills`` at random instants in the same run."""
    tally = CrashTally()
    if endpoint is None:
        federation = local_federation(folder / "kill-at-writes", rounds=rounds)
    else:
        federation = s3_federation(folder / "kill-at-writes-s3", endpoint, rounds=rounds)
    points = write_points(rounds, last_round=last_round)
    crashes(federation, ref, tally, random_kills=random_kills, points=points)
    what = "at every write of a round's close" + (
        f" (through round {last_round}), then {random_kills} at random instants"
        if last_round
        else ""
    )
    return tally.figures(federation.folder.name, what)


def _torn_files(federation: Federation) -> tuple[int, int]:
    """Temporary files a killed writer left: (listed by the store, lying on disk)."""
    listed = sum(key.endswith(".fedsilo-tmp") for key in federation.store.list_keys("federations/"))
    if not federation.uri.startswith("file://"):
        return listed, 0
    root = Path(federation.uri.removeprefix("file://"))
    return listed, sum(1 for _ in root.rglob("*.fedsilo-tmp"))
