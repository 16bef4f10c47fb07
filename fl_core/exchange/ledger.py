"""The audit ledger's hash chain: each entry commits to its content and its predecessor."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from fl_core.errors import (
    AccessDeniedError,
    ExchangeError,
    LedgerVerificationError,
    ObjectIntegrityError,
    ObjectNotFoundError,
)
from fl_core.exchange.manifests import (
    Decision,
    LedgerEntry,
    PublishedModel,
    RoundResult,
    Sha256Source,
    UpdateManifest,
)
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.published import model_of, published_bytes, scaling_to_apply
from fl_core.hashing import canonical_json_sha256, sha256_hex
from fl_core.types import RoundIndex


def chain_hash(fields: Mapping[str, Any]) -> str:
    """sha256 of the entry's canonical JSON (which includes ``prev_hash``)."""
    return canonical_json_sha256(fields)


# ---- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerProblem:
    """One thing in the exchange that the ledger does not vouch for."""

    round_index: RoundIndex
    message: str


@dataclass(frozen=True)
class LedgerReport:
    """What ``verify_ledger`` found: every problem, ordered by round."""

    federation_id: str
    rounds_checked: int
    head_hash: str | None
    problems: list[LedgerProblem] = field(default_factory=list)
    closing_round: RoundIndex | None = None
    """A round whose close is under way or was cut short by a crash: its ``result.json`` is
    written and ``state.json`` has not moved past it. Its ledger entry and the next global
    model may still be missing; the aggregator writes them when it resumes."""
    versions_checked: bool = True
    """Whether the store's object versions were counted (S3 keeps every overwrite as a
    version; a local folder keeps none, and a hospital's role may not list them)."""
    digest_sources: dict[str, int] = field(default_factory=dict)
    """Admitted updates by who vouched for their sha256 at admission (``s3_checksum``:
    S3 verified it on upload; ``computed``: the aggregator hashed the file); every one was
    hashed again here."""
    published_sha256: str | None = None
    """The published model's sha256 where the exchange holds one (derived again from the
    final round's global model and its recalibration, and compared byte for byte)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_round(self) -> RoundIndex | None:
        return self.problems[0].round_index if self.problems else None

    def summary(self) -> str:
        """One line: the verdict, naming the first bad round and what is wrong with it."""
        if self.ok:
            closing = (
                f"; round {self.closing_round} is closing (the aggregator finishes its ledger "
                "entry and next model when it runs)"
                if self.closing_round is not None
                else ""
            )
            versions = (
                ""
                if self.versions_checked
                else "; object versions not counted (the store keeps none, or this role may "
                "not list them)"
            )
            sources = ", ".join(f"{n} {src}" for src, n in sorted(self.digest_sources.items()))
            digests = f"; update digests at admission: {sources}" if sources else ""
            published = (
                f"; published model {self.published_sha256} derives from the final round"
                if self.published_sha256 is not None
                else ""
            )
            return (
                f"ledger of federation {self.federation_id} verified: {self.rounds_checked} "
                f"rounds, head hash {self.head_hash}{closing}{versions}{digests}{published}"
            )
        first = self.problems[0]
        more = len(self.problems) - 1
        tail = f" ({more} more problem{'s' if more != 1 else ''} after it)" if more else ""
        return (
            f"ledger of federation {self.federation_id} FAILED at round {first.round_index}: "
            f"{first.message}{tail}"
        )


def entry_fields(entry: LedgerEntry, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """An entry's fields as hashed: ``sha256_sources`` only where it records any, so that
    entries written before digests had a source keep their hash."""
    left_out = set(exclude) | ({"sha256_sources"} if not entry.sha256_sources else set())
    return entry.model_dump(mode="json", exclude=left_out)


def entry_hash_of(entry: LedgerEntry) -> str:
    """The hash an entry must carry: ``chain_hash`` of every field but ``entry_hash``."""
    return chain_hash(entry_fields(entry, frozenset({"entry_hash"})))


def expected_entry_fields(result: RoundResult) -> dict[str, Any]:
    """The ledger fields a round's ``result.json`` implies (as the round loop writes them)."""
    fields: dict[str, Any] = {
        "round_index": result.round_index,
        "global_sha256": result.global_sha256,
        "next_global_sha256": result.next_global_sha256,
        "accepted": [[d.site_id, d.sha256 or ""] for d in result.accepted],
        "rejected": [[d.site_id, d.reason or ""] for d in result.rejected],
        "config_hash": result.config_hash,
    }
    sources = sha256_sources(result.accepted)
    if sources:
        fields["sha256_sources"] = sources
    return fields


def entry_for(result: RoundResult, previous: LedgerEntry | None) -> LedgerEntry:
    """The ledger entry of a closed round, chained to ``previous`` (None: round 1)."""
    fields = {
        **expected_entry_fields(result),
        "prev_hash": previous.entry_hash if previous is not None else None,
    }
    unhashed = LedgerEntry.model_validate({**fields, "entry_hash": ""})
    return LedgerEntry.model_validate({**fields, "entry_hash": entry_hash_of(unhashed)})


def sha256_sources(accepted: Sequence[Decision]) -> dict[str, Sha256Source]:
    """Where each accepted update's sha256 came from, as the ledger records it."""
    return {d.site_id: d.sha256_source for d in accepted if d.sha256 and d.sha256_source}


def _closed_rounds_expected(exchange: Exchange) -> RoundIndex:
    """The last round that must have a ledger entry, from state.json and the rounds present."""
    last = 0
    found = exchange.read_state()
    if found is not None:
        state = found[0]
        last = state.round_index if state.phase == "done" else state.round_index - 1
    round_index = 1
    while exchange.read_global_manifest(round_index) is not None:
        if exchange.read_result(round_index) is not None:
            last = max(last, round_index)
        round_index += 1
    return last


def _closing_round(exchange: Exchange) -> RoundIndex | None:
    """The round whose close is in progress or was interrupted, if any.

    The aggregator closes round r by writing result.json, the ledger entry, round r+1's global
    model, then state.json (which moves to r+1). A crash in between leaves result.json with
    state.json still at r: the entry and the next model are missing because they were never
    written, not because they were removed, and a resumed aggregator writes them.
    """
    found = exchange.read_state()
    if found is None or found[0].phase != "collecting":
        return None
    round_index = found[0].round_index
    return round_index if exchange.read_result(round_index) is not None else None


def _stored_ledger_rounds(exchange: Exchange) -> list[RoundIndex]:
    rounds = []
    for key in exchange.store.list_keys(exchange.layout.ledger_prefix()):
        stem = key.rsplit("/", 1)[-1].removesuffix(".json")
        if stem.isdigit():
            rounds.append(int(stem))
    return sorted(rounds)


_HISTORY_KEY = re.compile(
    r"(?:ledger/(?P<entry>\d{6})\.json"
    r"|rounds/(?P<round>\d{6})/(?:result\.json|global\.json|global\.safetensors)"
    r"|(?P<published>published/model\.(?:json|safetensors)))"
)


def _rewritten_history(
    exchange: Exchange, published_round: RoundIndex
) -> tuple[list[LedgerProblem], bool]:
    """Write-once history keys that hold more than one version: each was overwritten (or
    deleted) after it was written, whatever their content says now. Returns the problems and
    whether versions could be counted at all. ``published_round``: the round a rewritten
    published model is reported at."""
    root = exchange.layout.root
    try:
        entries = exchange.store.count_versions(exchange.layout.ledger_prefix())
        rounds = exchange.store.count_versions(f"{root}rounds/")
        published = exchange.store.count_versions(exchange.layout.published_prefix())
    except AccessDeniedError:
        return [], False
    if entries is None or rounds is None or published is None:
        return [], False
    counts = entries | rounds | published
    problems = []
    for key, count in counts.items():
        match = _HISTORY_KEY.fullmatch(key.removeprefix(root))
        if match is None or count < 2:
            continue
        found = match.group("entry") or match.group("round")
        round_index = int(found) if found else published_round
        name = key.removeprefix(root)
        problems.append(
            LedgerProblem(
                round_index,
                f"{name} has {count} versions: it was overwritten or deleted after it was "
                "written (rewritten history)",
            )
        )
    return problems, True


def _check_model(
    exchange: Exchange, round_index: RoundIndex, sha256: str, parent_sha256: str | None
) -> list[LedgerProblem]:
    """The global model of ``round_index`` (manifest and file) against the ledger's sha256."""
    manifest = exchange.read_global_manifest(round_index)
    if manifest is None:
        return [LedgerProblem(round_index, "global model manifest is missing")]
    problems = []
    if manifest.sha256 != sha256:
        problems.append(LedgerProblem(round_index, "global model manifest names another sha256"))
    if parent_sha256 is not None and manifest.parent_sha256 != parent_sha256:
        problems.append(LedgerProblem(round_index, "global model manifest names another parent"))
    try:
        data = exchange.store.get(exchange.layout.global_weights_key(round_index))
    except ObjectNotFoundError:
        return [*problems, LedgerProblem(round_index, "global model file is missing")]
    if sha256_hex(data) != sha256:
        problems.append(
            LedgerProblem(round_index, "global model file was altered (its sha256 differs)")
        )
    return problems


def _check_update_file(
    exchange: Exchange, round_index: RoundIndex, site_id: str, sha256: str
) -> list[LedgerProblem]:
    """One admitted training answer: hashed here, and its stored S3 checksum where kept."""
    try:
        data, stored = exchange.read_update_weights_verified(round_index, site_id)
    except ObjectNotFoundError:
        return [LedgerProblem(round_index, f"update file of {site_id} is missing")]
    except ObjectIntegrityError as err:  # no full-object checksum, or not its writer's claim
        reason = str(err).split(";")[0]
        return [LedgerProblem(round_index, f"update file of {site_id} was replaced: {reason}")]
    if sha256_hex(data) != sha256:
        return [
            LedgerProblem(round_index, f"update file of {site_id} was altered (sha256 differs)")
        ]
    if stored is not None and stored != sha256:
        return [
            LedgerProblem(
                round_index, f"S3's stored checksum of the update file of {site_id} differs"
            )
        ]
    return []


def _check_updates(exchange: Exchange, entry: LedgerEntry) -> list[LedgerProblem]:
    """Every admitted answer against what the ledger recorded.

    A training answer is one file, its manifest inside, so the sha256 the ledger recorded
    covers both: the file is read once and hashed here, whoever vouched for it at admission
    (an audit takes no digest from anyone). On S3 the checksum S3 stored with the file must
    be that sha256 too. An evaluation answer is a manifest alone.
    """
    problems = []
    round_index = entry.round_index
    for site_id, sha256 in entry.accepted:
        if sha256:
            problems += _check_update_file(exchange, round_index, site_id, sha256)
            continue
        try:
            manifest = UpdateManifest.model_validate_json(
                exchange.read_update_manifest_bytes(round_index, site_id)
            )
        except ObjectNotFoundError:
            problems.append(LedgerProblem(round_index, f"update manifest of {site_id} is missing"))
            continue
        except (ValidationError, ExchangeError):
            problems.append(
                LedgerProblem(round_index, f"update manifest of {site_id} is malformed")
            )
            continue
        if manifest.global_sha256 != entry.global_sha256:
            problems.append(
                LedgerProblem(round_index, f"update manifest of {site_id} disagrees with ledger")
            )
    return problems


def link_problems(
    round_index: RoundIndex, entry: LedgerEntry, previous: LedgerEntry | None
) -> list[LedgerProblem]:
    """The chain alone: the entry stored as ``round_index`` is that round's, hashes to its
    ``entry_hash`` and links to ``previous`` (which made the model it names)."""
    problems = []
    if entry.round_index != round_index:
        problems.append(
            LedgerProblem(
                round_index,
                f"entry stored as round {round_index} is round {entry.round_index}'s "
                "(entries were reordered or replaced)",
            )
        )
    if entry_hash_of(entry) != entry.entry_hash:
        problems.append(LedgerProblem(round_index, "entry was altered (its hash does not match)"))
    if entry.prev_hash != (previous.entry_hash if previous else None):
        problems.append(
            LedgerProblem(
                round_index,
                "prev_hash does not link to the previous entry "
                "(an entry was removed, replaced or reordered)",
            )
        )
    if previous is not None and previous.next_global_sha256 != entry.global_sha256:
        problems.append(
            LedgerProblem(round_index, "global model is not the one the previous round made")
        )
    return problems


def _check_entry(
    exchange: Exchange,
    round_index: RoundIndex,
    entry: LedgerEntry,
    previous: LedgerEntry | None,
) -> list[LedgerProblem]:
    problems = link_problems(round_index, entry, previous)
    result = exchange.read_result(round_index)
    if result is None:
        problems.append(LedgerProblem(round_index, "result.json is missing"))
    else:
        fields = entry_fields(entry, frozenset({"entry_hash", "prev_hash"}))
        if expected_entry_fields(result) != fields:
            problems.append(LedgerProblem(round_index, "result.json disagrees with the ledger"))
    manifest = exchange.read_global_manifest(round_index)
    if manifest is not None and manifest.config_hash != entry.config_hash:
        problems.append(LedgerProblem(round_index, "global manifest names another config hash"))
    head = previous.entry_hash if previous else None
    if manifest is not None and manifest.ledger_head not in (None, head):
        problems.append(
            LedgerProblem(
                round_index,
                "global manifest names another ledger head than the previous entry's hash "
                "(the chain was rewritten after this model was published)",
            )
        )
    parent = previous.global_sha256 if previous else None
    problems += _check_model(exchange, round_index, entry.global_sha256, parent)
    return problems + _check_updates(exchange, entry)


def _check_published(
    exchange: Exchange, last: RoundIndex
) -> tuple[list[LedgerProblem], PublishedModel | None]:
    """The published model, where the exchange holds one (exchanges written before models
    were published hold none): its file hashes to its manifest, and is byte for byte the
    global model of the final round the ledger vouches for, with the recalibration that
    round's ``result.json`` recorded applied (``fl_core.exchange.published``)."""
    try:
        published = exchange.read_published_manifest()
    except ExchangeError as err:
        return [LedgerProblem(last, f"published model manifest is malformed: {err}")], None
    if published is None:
        return [], None
    round_index = published.round_index
    entry = exchange.read_ledger_entry(round_index)
    manifest = exchange.read_global_manifest(round_index)
    if entry is None or manifest is None or not manifest.final:
        return [LedgerProblem(round_index, "published model names no final round")], published
    problems = []
    if published.global_sha256 != entry.global_sha256:
        problems.append(LedgerProblem(round_index, "published model names another global model"))
    if published.config_hash != entry.config_hash:
        problems.append(LedgerProblem(round_index, "published model names another config hash"))
    try:
        data = exchange.store.get(exchange.layout.published_weights_key())
        global_bytes = exchange.store.get(exchange.layout.global_weights_key(round_index))
    except ObjectNotFoundError:
        return [*problems, LedgerProblem(round_index, "published model file is missing")], published
    if sha256_hex(data) != published.sha256 or len(data) != published.num_bytes:
        altered = "published model file was altered (its sha256 differs)"
        return [*problems, LedgerProblem(round_index, altered)], published
    if sha256_hex(global_bytes) != entry.global_sha256:
        return problems, published  # the global model's own check reports it
    result = exchange.read_result(round_index)
    fitted = None if result is None else result.recalibration
    if published.scaling != scaling_to_apply(model_of(global_bytes), fitted):
        problems.append(
            LedgerProblem(
                round_index,
                "published model carries another scaling than the final round's recalibration",
            )
        )
    elif published_bytes(global_bytes, published.scaling) != data:
        problems.append(
            LedgerProblem(
                round_index,
                "published model is not the final global model with its recorded scaling",
            )
        )
    return problems, published


def verify_ledger(exchange: Exchange) -> LedgerReport:
    """Recompute the hash chain and check every stored file it vouches for.

    Each closed round must have an entry whose hash matches its content, whose ``prev_hash``
    is the previous entry's hash, which agrees with ``result.json``, and whose global models
    and admitted updates hash to what the stored files hold. Problems are returned in round
    order, so ``first_bad_round`` is the first round where anything was altered, removed or
    reordered. Where the store keeps versions and the caller may list them, a history key
    written more than once is a problem too, whatever it holds now.

    Raises ``LedgerVerificationError`` when the exchange holds nothing of the federation: a
    wrong federation id or exchange is never reported as a verified empty ledger.
    """
    stored = _stored_ledger_rounds(exchange)
    if not stored and exchange.read_state() is None and exchange.read_global_manifest(1) is None:
        raise LedgerVerificationError(
            f"nothing to verify: federation {exchange.federation_id} has no state, global model "
            f"or ledger entry in {exchange.describe()}; check --federation and --exchange"
        )
    last = max([_closed_rounds_expected(exchange), *stored])
    closing = _closing_round(exchange)
    problems: list[LedgerProblem] = []
    sources: Counter[str] = Counter()
    previous: LedgerEntry | None = None
    for round_index in range(1, last + 1):
        try:
            entry = exchange.read_ledger_entry(round_index)
        except ExchangeError:
            problems.append(LedgerProblem(round_index, "entry is malformed (altered)"))
            previous = None
            continue
        if entry is None and round_index == closing == last:
            break  # written when the aggregator resumes the close
        if entry is None:
            problems.append(LedgerProblem(round_index, "entry is missing (removed)"))
            previous = None
            continue
        sources.update(entry.sha256_sources.values())
        try:
            problems += _check_entry(exchange, round_index, entry, previous)
        except ExchangeError as err:
            problems.append(LedgerProblem(round_index, f"stored files are unreadable: {err}"))
        previous = entry
    next_pending = (
        previous is not None
        and previous.round_index == closing
        and exchange.read_global_manifest(previous.round_index + 1) is None
    )
    if previous is not None and previous.next_global_sha256 is not None and not next_pending:
        # the newest model is vouched for by the last entry before its own round closes
        problems += _check_model(
            exchange, previous.round_index + 1, previous.next_global_sha256, previous.global_sha256
        )
    published_problems, published = _check_published(exchange, last)
    rewritten, versions_checked = _rewritten_history(
        exchange, published.round_index if published is not None else last
    )
    return LedgerReport(
        federation_id=exchange.federation_id,
        rounds_checked=last,
        head_hash=previous.entry_hash if previous else None,
        problems=sorted(problems + published_problems + rewritten, key=lambda p: p.round_index),
        closing_round=closing,
        versions_checked=versions_checked,
        digest_sources=dict(sources),
        published_sha256=published.sha256 if published is not None else None,
    )
