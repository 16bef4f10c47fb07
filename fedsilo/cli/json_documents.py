"""What ``--json`` prints: one JSON document on stdout per command, schema in docs/cli-json.md.

Each document names its schema (``fedsilo.status/1``...) so a script can tell a later layout
from this one. The models are built from the objects the table views read, field by field,
so the JSON and the table never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from fedsilo.ops.status import FederationStatus
    from fl_core.exchange.ledger import LedgerReport
    from fl_core.exchange.manifests import PreflightReport


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", from_attributes=True)


class SkippedDocument(_Document):
    site_id: str
    key: str
    reason: str
    detail: str


class SiteStatusDocument(_Document):
    site_id: str
    registration: str
    state: str
    invited: bool
    answered: bool
    decision: str
    last_rejection: str | None
    epsilon: float | None
    last_auroc: float | None
    last_auroc_round: int | None


class StatusDocument(_Document):
    schema_id: Literal["fedsilo.status/1"] = "fedsilo.status/1"
    federation_id: str
    exchange: str
    round_index: int | None
    training_round: int | None
    task: str | None
    phase: str
    final: bool
    ended: bool
    deadline_in_s: float | None
    message: str | None
    dp_fedavg_epsilon: float | None
    foreign_keys: int
    foreign_key_samples: list[str]
    withheld: str | None = None
    sites: list[SiteStatusDocument]
    skipped: list[SkippedDocument]


class LedgerProblemDocument(_Document):
    round_index: int
    message: str


class LedgerDocument(_Document):
    schema_id: Literal["fedsilo.ledger-verify/1"] = "fedsilo.ledger-verify/1"
    federation_id: str
    ok: bool
    rounds_checked: int
    head_hash: str | None
    first_bad_round: int | None
    closing_round: int | None
    versions_checked: bool
    digest_sources: dict[str, int]
    published_sha256: str | None
    problems: list[LedgerProblemDocument]
    summary: str


class PreflightCheckDocument(_Document):
    name: str
    ok: bool
    detail: str
    fix: str | None


class OnboardCheckDocument(_Document):
    schema_id: Literal["fedsilo.onboard-check/1"] = "fedsilo.onboard-check/1"
    federation_id: str
    site_id: str
    account_id: str
    passed: bool
    checks: list[PreflightCheckDocument]
    skipped: list[SkippedDocument]


def status_json(status: FederationStatus) -> str:
    return StatusDocument.model_validate(status).model_dump_json(indent=2)


def ledger_json(report: LedgerReport) -> str:
    document = LedgerDocument(
        federation_id=report.federation_id,
        ok=report.ok,
        rounds_checked=report.rounds_checked,
        head_hash=report.head_hash,
        first_bad_round=report.first_bad_round,
        closing_round=report.closing_round,
        versions_checked=report.versions_checked,
        digest_sources=report.digest_sources,
        published_sha256=report.published_sha256,
        problems=[LedgerProblemDocument.model_validate(p) for p in report.problems],
        summary=report.summary(),
    )
    return document.model_dump_json(indent=2)


def onboard_check_json(
    report: PreflightReport, passed: bool, skipped: list[SkippedDocument]
) -> str:
    document = OnboardCheckDocument(
        federation_id=report.federation_id,
        site_id=report.site_id,
        account_id=report.account_id,
        passed=passed,
        checks=[PreflightCheckDocument.model_validate(check) for check in report.checks],
        skipped=skipped,
    )
    return document.model_dump_json(indent=2)
