"""The ledger as one hospital can check it, against the receipts only it holds.

The coordinating account could overwrite ledger entries and round results and recompute the
whole chain so that its own ``verify_ledger`` passes. Rewriting entry ``k`` changes the hash of
every entry from ``k`` on, and each global model after round ``k`` named the head as it was
(``GlobalManifest.ledger_head``): a hospital that kept those heads (``receipts``) sees that
the chain no longer passes through them. Its updates' sha256, hashed on its side, show whether
the ledger still records what it sent.

A hospital's role may read ``rounds/*/global.json`` and ``ledger/*.json`` by exact key and list
nothing: entries are read for rounds 1, 2, ... up to the first one it cannot read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fl_core.errors import AccessDeniedError, ConfigError, ExchangeError, LedgerVerificationError
from fl_core.exchange.ledger import LedgerProblem, link_problems
from fl_core.exchange.manifests import LedgerEntry
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.receipts import Receipt
from fl_core.types import RoundIndex, SiteId


@dataclass(frozen=True)
class WitnessReport:
    """What one hospital's check found: every problem, ordered by round."""

    federation_id: str
    site_id: SiteId
    rounds_read: int
    receipts_checked: int
    head_hash: str | None
    problems: list[LedgerProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line when it verifies; one line per problem when it does not."""
        if self.ok:
            return [
                f"ledger of federation {self.federation_id} verified for {self.site_id}: "
                f"{self.rounds_read} entries read, {self.receipts_checked} receipts match, "
                f"head hash {self.head_hash}"
            ]
        return [
            f"ledger of federation {self.federation_id} FAILED for {self.site_id} at round "
            f"{problem.round_index}: {problem.message}"
            for problem in self.problems
        ]


def _read_chain(exchange: Exchange) -> tuple[list[LedgerEntry], list[LedgerProblem]]:
    """Entries 1, 2, ... by exact key, until the first that is absent (or, to a role that may
    not list, denied: S3's answer for a key that does not exist)."""
    entries: list[LedgerEntry] = []
    problems: list[LedgerProblem] = []
    round_index = 1
    while True:
        try:
            entry = exchange.read_ledger_entry(round_index)
        except AccessDeniedError:
            break
        except ExchangeError:
            problems.append(LedgerProblem(round_index, "ledger entry is malformed (altered)"))
            break
        if entry is None:
            break
        problems += link_problems(round_index, entry, entries[-1] if entries else None)
        entries.append(entry)
        round_index += 1
    return entries, problems


def _check_head(receipt: Receipt, chain: Sequence[LedgerEntry]) -> list[LedgerProblem]:
    """The head the round's global model named must be the chain's entry of the round before."""
    round_index = receipt.round_index
    if round_index == 1:  # no round closed before it
        if receipt.ledger_head is None:
            return []
        return [LedgerProblem(1, "round 1's global model named a ledger head before any round")]
    if receipt.ledger_head is None:
        return [
            LedgerProblem(
                round_index, "the global model this hospital answered named no ledger head"
            )
        ]
    if round_index - 1 > len(chain):
        return [
            LedgerProblem(
                round_index,
                f"the global model this hospital answered named ledger head "
                f"{receipt.ledger_head[:12]}… of round {round_index - 1}, but the ledger now "
                f"ends at round {len(chain)} (entries were removed)",
            )
        ]
    entry = chain[round_index - 2]
    if entry.entry_hash != receipt.ledger_head:
        return [
            LedgerProblem(
                round_index,
                f"the global model this hospital answered named ledger head "
                f"{receipt.ledger_head[:12]}…, but the entry of round {round_index - 1} now "
                f"hashes to {entry.entry_hash[:12]}…: history at or before round "
                f"{round_index - 1} was rewritten",
            )
        ]
    return []


def _check_update(
    receipt: Receipt, entry: LedgerEntry, seen_accepted: bool | None
) -> list[LedgerProblem]:
    """The update this hospital sent must be the one the ledger records for it, and still
    accepted where the hospital saw it accepted (``Receipt.previous_update_accepted`` of the
    next round). An update not seen accepted may have been rejected or arrived late: the
    ledger need not list it, but must not list another file for this hospital."""
    round_index, site_id = receipt.round_index, receipt.site_id
    problems = []
    if entry.global_sha256 != receipt.global_sha256:
        problems.append(
            LedgerProblem(
                round_index,
                "the ledger names another global model than the one this hospital answered",
            )
        )
    if receipt.update_sha256 is None:
        return problems
    recorded = [sha256 for site, sha256 in entry.accepted if site == site_id]
    if recorded and recorded != [receipt.update_sha256]:
        problems.append(
            LedgerProblem(
                round_index,
                f"the ledger records update {recorded[0][:12]}… for {site_id}, but it sent "
                f"{receipt.update_sha256[:12]}…",
            )
        )
    elif not recorded and seen_accepted:
        problems.append(
            LedgerProblem(
                round_index,
                f"the update {site_id} sent ({receipt.update_sha256[:12]}…) was accepted in the "
                "ledger entry it read a round later, and the entry no longer lists it",
            )
        )
    return problems


def _check_manifest(exchange: Exchange, receipt: Receipt) -> list[LedgerProblem]:
    """The round's global manifest must still be the one this hospital read."""
    round_index = receipt.round_index
    try:
        manifest = exchange.read_global_manifest(round_index)
    except AccessDeniedError:
        manifest = None
    except ExchangeError:
        return [LedgerProblem(round_index, "global manifest is malformed (altered)")]
    if manifest is None:
        return [LedgerProblem(round_index, "the global manifest this hospital read is gone")]
    if manifest.sha256 != receipt.global_sha256 or manifest.ledger_head != receipt.ledger_head:
        return [LedgerProblem(round_index, "the global manifest was rewritten since it was read")]
    return []


def _check_end(exchange: Exchange, last: RoundIndex) -> list[LedgerProblem]:
    """The chain may end only at the newest closed round: a global model published after the
    next round means that round closed, and its entry must be there."""
    try:
        later = exchange.read_global_manifest(last + 2)
    except (AccessDeniedError, ExchangeError):
        return []  # not published (or unreadable: _check_manifest names what it read)
    if later is None:
        return []
    return [
        LedgerProblem(
            last + 1,
            f"round {last + 2}'s global model is published, so round {last + 1} closed, but "
            "its ledger entry is missing (removed)",
        )
    ]


def verify_as_site(
    exchange: Exchange, site_id: SiteId, receipts: Sequence[Receipt]
) -> WitnessReport:
    """Check the chain, every ledger head and every update in ``receipts`` against the ledger.

    Raises ``ConfigError`` when there is nothing to check (no receipts of this site and
    federation) and ``LedgerVerificationError`` when no ledger entry can be read: neither is
    ever reported as a pass.
    """
    federation_id = exchange.federation_id
    mine = sorted(
        (r for r in receipts if r.site_id == site_id and r.federation_id == federation_id),
        key=lambda r: r.round_index,
    )
    if not mine:
        held = sorted({f"{r.federation_id}/{r.site_id}" for r in receipts}) or ["none"]
        raise ConfigError(
            f"no receipts of site {site_id} in federation {federation_id} (the file holds: "
            f"{', '.join(held)}); check --federation and --site-id"
        )
    chain, problems = _read_chain(exchange)
    if not chain and not problems:
        raise LedgerVerificationError(
            f"no ledger entry of federation {federation_id} could be read from "
            f"{exchange.describe()}; check --federation, --exchange and that this role may "
            "read ledger/*.json"
        )
    seen_accepted = {r.round_index - 1: r.previous_update_accepted for r in mine}
    for receipt in mine:
        round_index: RoundIndex = receipt.round_index
        problems += _check_manifest(exchange, receipt)
        problems += _check_head(receipt, chain)
        if round_index <= len(chain):
            seen = seen_accepted.get(round_index)
            problems += _check_update(receipt, chain[round_index - 1], seen)
    problems += _check_end(exchange, len(chain))
    return WitnessReport(
        federation_id=federation_id,
        site_id=site_id,
        rounds_read=len(chain),
        receipts_checked=len(mine),
        head_hash=chain[-1].entry_hash if chain else None,
        problems=sorted(problems, key=lambda p: p.round_index),
    )
