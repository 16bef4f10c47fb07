"""Scenarios of a hostile member hospital: the attacks of ``member_attacks`` in a running
federation whose aggregator is SIGKILLed over the poisoned round 1 and restarted (on S3, an
update stored with SSE-C in a federation of its own), a ``num_examples`` claim far above what
the site reported before round 1, and account ids in non-ASCII digits at onboarding.

A scenario that the product cannot survive (an aggregator that dies of a file) still returns
its figures, each a miss naming how the aggregator ended, so one table shows every attack.
"""

from __future__ import annotations

import functools
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from chaos.attacks import signed_update
from chaos.federation import Federation, process_env, running
from chaos.member_attacks import (
    CRASH_HEADERS,
    FLOODER,
    MALFORMED_PREFLIGHTS,
    PLANTER,
    SSEC,
    MemberWriter,
    SseCUploader,
    invited_member_sites,
    moved_weights,
    named,
    pending_sites,
    wait_for_honest,
)
from chaos.scenarios import Figure, Reference, honest_losses
from chaos.ssec_proxy import SseCProxy
from chaos.storage import one_line
from fedsilo.ops.onboarding import request_digest
from fedsilo.testing.cli import run_fedsilo
from fedsilo.testing.manifests import answer_to
from fedsilo.testing.moto_s3 import moto_client
from fedsilo.testing.processes import Proc, ProcessWaitError
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest, RoundResult
from fl_core.exchange.protocol import Exchange
from fl_core.serialisation import decode_weights
from fl_core.types import Weights

KILL_OVER_ROUND_1 = {"at": "write", "key": "rounds/000001/result.json", "when": "before"}
"""Every answer of round 1, poisoned ones included, is decided; the result is not written."""
CLAIMANT = "bad-claim"
CLAIMED = 10_000_000
REPORTED = 28


class _BrokenError(Exception):
    """The aggregator ended other than as the scenario planned (one line: how)."""


def _last_line(proc: Proc) -> str:
    lines = [line for line in (proc.stderr() + proc.stdout()).splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


def _ended(proc: Proc) -> str:
    return f"{proc.name} exited {proc.popen.poll()}: {_last_line(proc)}"


def _foreign_count(federation: Federation, round_index: int) -> int | None:
    """The foreign keys a round's result.json counts (None: the round has no result)."""
    result = federation.exchange.read_result(round_index)
    return None if result is None else result.foreign_keys


def _decisions(result: RoundResult | None) -> dict[str, tuple[str, str | None]]:
    if result is None:
        return {}
    every = [*result.accepted, *result.rejected, *result.declined]
    return {d.site_id: (d.status, d.reason) for d in every}


# ---- planted keys, junk, crash headers, malformed preflights and moments, SSE-C -----------------


def hostile_members(federation: Federation, ref: Reference, junk_per_round: int) -> list[Figure]:
    """Every member attack of ``member_attacks`` but SSE-C; the aggregator dies before round
    1's result (every poisoned answer decided) and a new one takes over and finishes."""
    writer = MemberWriter(federation, junk_per_round)
    broken = _drive(
        federation,
        [*federation.honest, *invited_member_sites()],
        writer.prepare,
        writer.write_round,
    )
    return _member_figures(federation, ref, writer, broken)


def _drive(
    federation: Federation,
    sites: list[str],
    prepare: Callable[[], None],
    write_round: Callable[[GlobalManifest, list[Proc]], None],
    endpoint_url: str | None = None,
) -> str | None:
    """Run the federation with ``write_round`` answering each round; the aggregator is
    SIGKILLed before round 1's result and started again. None, or how it ended otherwise."""
    with running(federation):
        prepare()
        server = federation.start_server(sites, KILL_OVER_ROUND_1, endpoint_url=endpoint_url)
        clients = federation.start_clients()
        try:
            for round_index in range(1, federation.rounds + 2):
                manifest = federation.wait_for(
                    f"global model of round {round_index}",
                    functools.partial(federation.exchange.read_global_manifest, round_index),
                    [server],
                )
                write_round(manifest, [server])
                if round_index == 1:
                    if server.wait() != -signal.SIGKILL:
                        raise _BrokenError(f"first life: {_ended(server)}")
                    server = federation.start_server(sites, endpoint_url=endpoint_url)
            if server.wait() != 0:
                raise _BrokenError(f"last life: {_ended(server)}")
            for site, proc in clients.items():
                if proc.wait() != 0:
                    raise _BrokenError(f"{site}: {_ended(proc)}")
        except _BrokenError as err:
            return str(err)
        except ProcessWaitError:
            return _ended(server)
    return None


def _member_figures(
    federation: Federation, ref: Reference, writer: MemberWriter, broken: str | None
) -> list[Figure]:
    group = federation.folder.name
    rounds = list(writer.rounds)
    results = {r: federation.exchange.read_result(r) for r in rounds}
    decided = {r: _decisions(result) for r, result in results.items()}
    honest = federation.honest
    invited = set(honest) | set(invited_member_sites())
    why = f"; {broken}" if broken else ""

    accepted = sum(decided[r].get(h, ("", None))[0] == "accepted" for r in rounds for h in honest)
    planted = 3 * len(honest)
    exact = [r for r in rounds if results[r] is not None and set(decided[r]) == invited]
    flood_ok = [r for r in exact if decided[r].get(FLOODER) == ("rejected", "malformed_manifest")]
    counted = {r: _foreign_count(federation, r) for r in rounds}
    right_count = [r for r in rounds if counted[r] == writer.planted.get(r)]
    shown_counts = ", ".join(f"r{r} {counted[r]}/{writer.planted.get(r)}" for r in rounds)

    crash_tried = [(r, c) for r in rounds[:-1] for c in CRASH_HEADERS]
    crash_reasons = [decided[r].get(c.site, ("undecided", None)) for r, c in crash_tried]
    crash_ok = sum(status == "rejected" and named(reason) for status, reason in crash_reasons)
    crash_misses = sorted(
        {
            f"{c.name}: {reason or status}"
            for (_, c), (status, reason) in zip(crash_tried, crash_reasons, strict=True)
            if not (status == "rejected" and named(reason))
        }
    )
    shown_reasons = sorted({reason or status for status, reason in crash_reasons})

    activated = [
        s
        for s in pending_sites()
        if (found := federation.exchange.read_registration(s)) and found.status != "pending"
    ]
    lost = honest_losses(federation)
    return [
        Figure(
            group,
            f"keys naming another hospital ({planted} a round: {PLANTER}.x/<other>.*, "
            f"<other>.x/updates/{PLANTER}.json; planted for every round before it opens): "
            "honest hospitals accepted",
            f"{accepted}/{len(honest) * len(rounds)} hospital-rounds{why}",
            "all",
            accepted == len(honest) * len(rounds) and not broken,
        ),
        Figure(
            group,
            f"junk keys under its own prefix ({writer.junk_per_round} a round): rounds whose "
            "decisions are exactly the invited sites', the flooder malformed_manifest",
            f"{len(flood_ok)}/{len(rounds)}{why}",
            "all",
            len(flood_ok) == len(rounds) and not broken,
        ),
        Figure(
            group,
            "foreign keys counted in result.json (planted + junk, per round)",
            shown_counts,
            "all",
            len(right_count) == len(rounds),
        ),
        Figure(
            group,
            f"crash headers ({len(CRASH_HEADERS)} kinds: nesting, 1e999, 2**70, negative shapes "
            "and offsets): rejected with a named reason, aggregator alive",
            f"{crash_ok}/{len(crash_tried)} ({', '.join(shown_reasons)})"
            + (f" missed: {'; '.join(crash_misses[:3])}" if crash_misses else "")
            + why,
            "100 %",
            crash_ok == len(crash_tried) and not broken,
        ),
        Figure(
            group,
            f"malformed preflight ({len(MALFORMED_PREFLIGHTS)}) and moments "
            f"({len(writer.moments)}) reports: fatal to the aggregator; pending sites activated",
            f"{'1' if broken else '0'} fatal, {len(activated)} activated{why}",
            "0, 0",
            not broken and not activated,
        ),
        Figure(
            group,
            "aggregator SIGKILLed over the poisoned round 1 and restarted: lives as planned",
            broken or "killed, then finished",
            "killed, then finished",
            not broken,
        ),
        Figure(group, "honest updates lost", str(lost), "0", lost == 0),
        _honest_model(federation, ref),
    ]


def ssec_upload(federation: Federation, ref: Reference) -> list[Figure]:
    """``bad-ssec``'s SSE-C uploads, the aggregator reading through ``SseCProxy`` (moto alone
    serves SSE-C objects to anyone); killed and restarted over round 1 as the other attacks."""
    group = federation.folder.name
    assert federation.endpoint_url is not None
    proxy = SseCProxy(federation.endpoint_url)
    uploader = SseCUploader(federation, moto_client(proxy.url))
    try:
        broken = _drive(
            federation,
            [*federation.honest, SSEC],
            uploader.prepare,
            uploader.write_round,
            proxy.url,
        )
    finally:
        proxy.close()
    rounds = range(1, federation.rounds + 1)
    decided = [_decisions(federation.exchange.read_result(r)).get(SSEC) for r in rounds]
    unreadable = sum(d == ("rejected", "unreadable") for d in decided)
    shown = sorted({"undecided" if d is None else d[1] or d[0] for d in decided})
    closed = sum(
        federation.exchange.read_result(r) is not None for r in range(1, federation.rounds + 2)
    )
    return [
        Figure(
            group,
            "update stored with SSE-C (S3 refuses the aggregator's read): rejected unreadable, "
            "rounds go on",
            f"{unreadable}/{len(decided)} unreadable ({', '.join(shown)}); {closed}/"
            f"{federation.rounds + 1} rounds closed; {proxy.refused} reads refused"
            + (f"; {broken}" if broken else ""),
            "all",
            unreadable == len(decided) and closed == federation.rounds + 1 and not broken,
        ),
        _honest_model(federation, ref),
    ]


def _honest_model(federation: Federation, ref: Reference) -> Figure:
    """Bit-identical to the honest-only run; a miss names the FedAvg weights round 1 capped
    (``round.max_weight_share`` is computed from the invited sites' registered rows)."""
    sha = federation.final_sha256()
    first = federation.exchange.read_result(1)
    capped = first.capped_weights if first is not None else {}
    return Figure(
        federation.folder.name,
        "honest hospitals' final model bit-identical to the honest-only run",
        "yes" if sha == ref.sha256 else f"no ({(sha or 'none')[:12]}; r1 capped {capped})",
        "yes",
        sha == ref.sha256,
    )


# ---- a num_examples claim far above the site's round-0 count -----------------------------------


def _float_vector(weights: Weights) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.concatenate([np.asarray(weights[k], np.float64).ravel() for k in sorted(weights)])


class _Claimant:
    """``bad-claim``: moments for 28 examples (an honest site's, scaled), then in every
    training round a valid update ``global + 0.25`` that claims 10,000,000 examples."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.updates: dict[int, Weights] = {}

    def report_moments(self, watch: list[Proc]) -> None:
        exchange = self.federation.exchange
        model = self.federation.wait_for(
            "an honest hospital's moments",
            lambda: exchange.read_moments_bytes(self.federation.honest[0]),
            watch,
        )
        report = json.loads(model)
        scale = REPORTED / max(report["num_examples"], 1)
        report.update(
            site_id=CLAIMANT,
            num_examples=REPORTED,
            count=[c * scale for c in report["count"]],
            total=[t * scale for t in report["total"]],
            total_sq=[t * scale for t in report["total_sq"]],
        )
        key = exchange.layout.moments_key(CLAIMANT)
        self.federation.store.put_new(key, json.dumps(report).encode())

    def answer(self, round_index: int, watch: list[Proc]) -> None:
        federation = self.federation
        manifest = federation.wait_for(
            f"global model of round {round_index}",
            lambda: federation.exchange.read_global_manifest(round_index),
            watch,
        )
        wait_for_honest(federation, round_index, watch)
        layout = federation.exchange.layout
        if manifest.task != "train":
            key = layout.update_manifest_key(round_index, CLAIMANT)
            federation.store.put_new(key, b"{not json")
            return
        weights = moved_weights(federation, manifest)
        self.updates[round_index] = weights
        data = signed_update(weights, answer_to(manifest, CLAIMANT, num_examples=CLAIMED))
        federation.store.put_new(layout.update_weights_key(round_index, CLAIMANT), data)

    def weight(self, round_index: int) -> tuple[float, float, str]:
        """(effective weight, weight its count entitles it to, its decision) in a round:
        the next global model projected onto the line from the honest FedAvg to its update."""
        exchange = self.federation.exchange
        result = exchange.read_result(round_index)
        next_manifest = exchange.read_global_manifest(round_index + 1)
        assert result is not None and next_manifest is not None
        honest = [d for d in result.accepted if d.site_id != CLAIMANT]
        used = {d.site_id: result.capped_weights.get(d.site_id, d.num_examples) for d in honest}
        total = sum(used.values())
        entitled = REPORTED / (REPORTED + total)
        mine = {d.site_id: d for d in [*result.accepted, *result.rejected]}.get(CLAIMANT)
        decision = "undecided" if mine is None else (mine.reason or mine.status)
        if mine is None or mine.status != "accepted":
            return 0.0, entitled, decision
        mean = sum(
            used[d.site_id] * _float_vector(decode_weights(exchange.read_update_weights(
                round_index, d.site_id)))
            for d in honest
        ) / total  # fmt: skip
        moved = _float_vector(decode_weights(exchange.read_global_weights(next_manifest))) - mean
        towards = _float_vector(self.updates[round_index]) - mean
        share = float(moved @ towards / (towards @ towards))
        return share, entitled, f"accepted as {mine.num_examples}"


def overclaim(federation: Federation) -> list[Figure]:
    """The claimant's effective FedAvg weight in every training round."""
    group = federation.folder.name
    claimant = _Claimant(federation)
    broken: str | None = None
    with running(federation):
        server = federation.start_server([*federation.honest, CLAIMANT])
        clients = federation.start_clients()
        try:
            claimant.report_moments([server])
            for round_index in range(1, federation.rounds + 2):
                claimant.answer(round_index, [server])
            federation.run_to_end(server, clients)
        except ProcessWaitError:
            broken = _ended(server)
    if broken:
        return [Figure(group, f"num_examples claim of {CLAIMED:,}", broken, "-", False)]
    weights = [claimant.weight(r) for r in range(1, federation.rounds + 1)]
    worst = max(w for w, _, _ in weights)
    entitled = min(e for _, e, _ in weights)
    honest_rows = REPORTED / entitled - REPORTED
    unbounded = CLAIMED / (CLAIMED + honest_rows)
    ok = all(w <= e + 1e-3 for w, e, _ in weights)
    decisions = ", ".join(sorted({d for _, _, d in weights}))
    return [
        Figure(
            group,
            f"num_examples claim of {CLAIMED:,} against a round-0 count of {REPORTED} "
            f"({len(weights)} rounds): the claimant's effective weight in the global model",
            f"max {worst:.4f} ({decisions}; taken at its word {unbounded:.5f})",
            f"<= {entitled:.4f} (its count's share)",
            ok,
        )
    ]


# ---- account ids in non-ASCII digits at onboarding ---------------------------------------------

NON_ASCII_ACCOUNTS = {
    "full-width digits": "".join(chr(0xFF10 + int(d)) for d in "123456789012"),
    "Arabic-Indic digits": "".join(chr(0x0660 + int(d)) for d in "123456789012"),
}


def onboarding_ids(folder: Path) -> list[Figure]:
    """``fedsilo onboard request`` with the id, and ``onboard approve`` of a join request a
    hospital crafted with it (digest and all): each must stop with one line, and nothing may
    reach cdk.json or the registry."""
    folder.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    cdk = folder / "cdk.json"
    original = (repo / "cdk.json").read_text()
    cdk.write_text(original)
    federation_id = json.loads(original)["context"]["fedsilo"]["federation_id"]
    root = folder / "exchange"
    exchange = Exchange(LocalDirectoryStore(root), federation_id)
    env = process_env(folder)
    refused = tried = 0
    problems = []
    for number, (what, account) in enumerate(NON_ASCII_ACCOUNTS.items()):
        site = f"bad-account-{number}"
        fields = {
            "federation_id": federation_id,
            "site_id": site,
            "account_id": account,
            "region": "eu-west-1",
            "requested_by": f"arn:aws:iam::{account}:user/admin",
            "requested_unix": 1.0,
        }
        crafted = folder / f"join-request-{site}.json"
        crafted.write_text(json.dumps({**fields, "sha256": request_digest(fields)}))
        commands = {
            "request": [
                "onboard", "request", "--federation", federation_id, "--site-id", site,
                "--account-id", account, "--region", "eu-west-1",
                "--endpoint-url", "http://127.0.0.1:9", "--state-dir", str(folder / "state"),
                "--out", str(folder / f"request-{site}.json"),
            ],
            "approve": [
                "onboard", "approve", str(crafted), "--cdk-json", str(cdk),
                "--exchange", root.resolve().as_uri(),
            ],
        }  # fmt: skip
        for command, args in commands.items():
            tried += 1
            done = run_fedsilo(*args, cwd=folder, env=env, timeout_s=120)
            line = one_line(done.stdout + done.stderr)
            kept_out = cdk.read_text() == original and exchange.read_registration(site) is None
            if done.returncode != 0 and line is not None and kept_out:
                refused += 1
            else:
                problems.append(f"{command} ({what}): exit {done.returncode}")
    return [
        Figure(
            "onboarding",
            "account ids in full-width / Arabic-Indic digits (onboard request, approve of a "
            "crafted request): refused with one line, nothing registered",
            f"{refused}/{tried}" + (f"; {'; '.join(problems)}" if problems else ""),
            "all",
            refused == tried,
        )
    ]
