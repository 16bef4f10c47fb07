"""The exchange protocol: what is written where, in which order, verified how.

It runs unchanged over any ``ObjectStore``. The aggregator writes a global model's tensors
first and its manifest last, so a manifest's presence means its tensors are complete, and
readers verify the sha256 the manifest names before anything is decoded. A hospital's answer
is one write-once object: a training answer's manifest travels inside its safetensors file,
an evaluation answer (or a declined round) is the manifest alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from fl_core.config import HISTORY_RETENTION_DAYS
from fl_core.errors import CodecError, ExchangeError, ObjectExistsError, ObjectNotFoundError
from fl_core.exchange.layout import ExchangeLayout
from fl_core.exchange.manifests import (
    MANIFEST_METADATA_KEY,
    FederationState,
    GlobalManifest,
    LedgerEntry,
    MomentsReport,
    PreflightReport,
    PublishedModel,
    Registration,
    RoundResult,
    UpdateManifest,
)
from fl_core.exchange.store import ObjectStore
from fl_core.hashing import sha256_hex
from fl_core.ids import SITE_ID_PATTERN
from fl_core.serialisation import header_span, read_metadata
from fl_core.types import ETag, ObjectKey, RoundIndex, Sha256Hex, SiteId
from fl_core.validation import first_error

log = structlog.get_logger("fedsilo.exchange")

_Model = TypeVar("_Model", bound=BaseModel)
MAX_PREFLIGHT_BYTES = 256 * 1024
"""A preflight report is a dozen checks of a few lines each: far larger is not one."""


@dataclass(frozen=True)
class SkippedDocument:
    """A document that could not be read as what its key says it is, and why.

    What a hospital writes while it onboards (preflight reports), and the registry, are
    read by the aggregator, ``fedsilo status`` and ``onboard approve``: one malformed
    document is skipped and shown, never fatal to them.
    """

    key: ObjectKey
    reason: str
    """``malformed_preflight``, ``malformed_registration`` or ``too_large``."""
    detail: str


_HEAD_BYTES = 64 * 1024
"""First read of a training answer's header: its manifest is a few kB; longer ones need two."""


def _dump(document: BaseModel) -> bytes:
    return document.model_dump_json(indent=1).encode()


class Exchange:
    """One federation's view of a store."""

    def __init__(
        self,
        store: ObjectStore,
        federation_id: str,
        history_retention_days: int = HISTORY_RETENTION_DAYS,
    ) -> None:
        self.store = store
        self.history_retention_days = history_retention_days
        """Global models, round results and ledger entries are written retained this long."""
        self.layout = ExchangeLayout(federation_id)
        self._registrations: dict[str, tuple[str, Registration | None]] = {}
        """``list_registrations``' cache: key -> (version it was read at, its registration)."""
        self.skipped: dict[ObjectKey, SkippedDocument] = {}
        """Preflight reports and registrations skipped as malformed, as last read."""

    @property
    def federation_id(self) -> str:
        return self.layout.federation_id

    def describe(self) -> str:
        return f"{self.store.describe().rstrip('/')}/{self.layout.root}"

    def _read_model(self, key: str, model: type[_Model]) -> _Model | None:
        try:
            data = self.store.get(key)
        except ObjectNotFoundError:
            return None
        return self._parse(key, data, model)

    def _read_model_with_etag(self, key: str, model: type[_Model]) -> tuple[_Model, ETag] | None:
        """The object at ``key`` as ``model`` with its ETag (for a conditional replace)."""
        try:
            data, etag = self.store.get_with_etag(key)
        except ObjectNotFoundError:
            return None
        return self._parse(key, data, model), etag

    def _parse(self, key: str, data: bytes, model: type[_Model]) -> _Model:
        try:
            return model.model_validate_json(data)
        except ValidationError as err:
            raise ExchangeError(f"{key} in {self.store.describe()} is malformed: {err}") from err

    def _put_once_or_same(self, key: str, data: bytes, *, history: bool = False) -> None:
        """Write-once, but tolerate a resumed writer putting the very same bytes again.

        ``history``: the federation's record (global models, results, ledger entries), written
        retained so that the coordinating account cannot rewrite it either.
        """
        retain_until = (
            datetime.now(UTC) + timedelta(days=self.history_retention_days) if history else None
        )
        try:
            self.store.put_new(key, data, retain_until)
        except ObjectExistsError:
            if sha256_hex(self.store.get(key)) != sha256_hex(data):
                raise

    # ---- global model -------------------------------------------------------------------

    def publish_global(self, weights: bytes, manifest: GlobalManifest) -> None:
        if sha256_hex(weights) != manifest.sha256:
            raise ExchangeError("refusing to publish: weights do not match the manifest sha256")
        round_index = manifest.round_index
        self._put_once_or_same(self.layout.global_weights_key(round_index), weights, history=True)
        self._put_once_or_same(
            self.layout.global_manifest_key(round_index), _dump(manifest), history=True
        )

    def read_global_manifest(self, round_index: RoundIndex) -> GlobalManifest | None:
        return self._read_model(self.layout.global_manifest_key(round_index), GlobalManifest)

    def read_global_weights(self, manifest: GlobalManifest) -> bytes:
        """The global model's bytes, verified against its manifest."""
        data = self.store.get(self.layout.global_weights_key(manifest.round_index))
        if sha256_hex(data) != manifest.sha256:
            raise ExchangeError(
                f"global model of round {manifest.round_index} does not match its manifest "
                "sha256; the exchange was altered: stop and run `fedsilo ledger verify`"
            )
        return data

    # ---- the published model ------------------------------------------------------------

    def publish_model(self, weights: bytes, manifest: PublishedModel) -> None:
        """The federation's published model, its file first and its manifest last, both
        write-once and retained like the history they derive from. ``ObjectExistsError``
        where either is stored with other bytes (the caller decides whether that is the same
        model: a resumed writer's manifest differs in ``created_unix`` alone)."""
        if sha256_hex(weights) != manifest.sha256 or len(weights) != manifest.num_bytes:
            raise ExchangeError("refusing to publish: the model does not match its manifest")
        self._put_once_or_same(self.layout.published_weights_key(), weights, history=True)
        self._put_once_or_same(self.layout.published_manifest_key(), _dump(manifest), history=True)

    def read_published_manifest(self) -> PublishedModel | None:
        """The published model's manifest; None before the federation ends (and in exchanges
        written before models were published). ``ExchangeError`` where it is malformed."""
        manifest = self._read_model(self.layout.published_manifest_key(), PublishedModel)
        if manifest is not None and manifest.federation_id != self.federation_id:
            raise ExchangeError(
                f"{self.layout.published_manifest_key()} in {self.store.describe()} names "
                f"federation {manifest.federation_id[:80]!r}; the exchange was altered: run "
                "`fedsilo ledger verify`"
            )
        return manifest

    def read_published_weights(self, manifest: PublishedModel) -> bytes:
        """The published model's bytes, verified against its manifest."""
        data = self.store.get(self.layout.published_weights_key())
        if sha256_hex(data) != manifest.sha256:
            raise ExchangeError(
                "the published model does not match its manifest sha256; the exchange was "
                "altered: stop and run `fedsilo ledger verify`"
            )
        return data

    # ---- updates ------------------------------------------------------------------------

    def write_update(self, manifest: UpdateManifest, weights: bytes | None) -> Sha256Hex | None:
        """One write-once object: ``weights`` (which carry ``manifest`` in their metadata,
        ``fl_core.admission.update_metadata``) for a training answer, else the manifest.

        Returns the training answer's sha256, hashed here once: S3 verifies the upload
        against it, and the hospital's receipt records it.
        """
        round_index, site_id = manifest.round_index, manifest.site_id
        if weights is not None:
            digest = sha256_hex(weights)
            key = self.layout.update_weights_key(round_index, site_id)
            self.store.put_update(key, weights, digest)
            return digest
        # compact: every hospital writes one a round and its histograms are thousands of bins
        compact = manifest.model_dump_json().encode()
        self.store.put_new(self.layout.update_manifest_key(round_index, site_id), compact)
        return None

    def list_update_keys(self, round_index: RoundIndex) -> list[ObjectKey]:
        """Every key under a round's updates prefix as listed: hospital-written, unchecked."""
        return self.store.list_keys(self.layout.updates_prefix(round_index))

    def list_answered_sites(
        self, round_index: RoundIndex, invited_sites: Iterable[SiteId] | None = None
    ) -> list[SiteId]:
        """Invited sites with an answer in a round, once each, in listing order.

        A listed key counts only where it equals the canonical name of an invited site's
        answer (``ExchangeLayout.canonical_update_keys``); every other key is foreign and
        names nobody. ``invited_sites`` defaults to those of the round's global model (none
        before it is published).
        """
        if invited_sites is None:
            manifest = self.read_global_manifest(round_index)
            if manifest is None:
                return []
            invited_sites = manifest.invited_sites
        canonical = self.layout.canonical_update_keys(round_index, invited_sites)
        sites: dict[SiteId, None] = {}
        for key in self.list_update_keys(round_index):
            found = canonical.get(key)
            if found is not None and found[1] != "secagg":
                sites[found[0]] = None
        return list(sites)

    def read_standalone_manifest_bytes(
        self, round_index: RoundIndex, site_id: SiteId, max_bytes: int
    ) -> bytes:
        """A site's ``.json`` answer (an evaluation, or a declined round) in one bounded read:
        ``ObjectTooLargeError`` above ``max_bytes``, before the body is read."""
        return self.store.get_bounded(
            self.layout.update_manifest_key(round_index, site_id), max_bytes
        )

    def read_update_manifest_bytes(self, round_index: RoundIndex, site_id: SiteId) -> bytes:
        """The manifest of a site's answer, standalone or from inside its training file."""
        try:
            return self.store.get(self.layout.update_manifest_key(round_index, site_id))
        except ObjectNotFoundError:
            key = self.layout.update_weights_key(round_index, site_id)
        try:  # the header alone: status reads hundreds of these and the tensors may be large
            head = self.store.get_head(key, _HEAD_BYTES)
            span = header_span(head)
            if span > len(head):
                head = self.store.get_head(key, span)
            metadata = read_metadata(head)
        except CodecError as err:
            raise ExchangeError(f"update of {site_id} in round {round_index}: {err}") from err
        document = metadata.get(MANIFEST_METADATA_KEY)
        if document is None:
            raise ExchangeError(f"update of {site_id} in round {round_index} has no manifest")
        return document.encode()

    def update_weights_size(self, round_index: RoundIndex, site_id: SiteId) -> int:
        return self.store.size(self.layout.update_weights_key(round_index, site_id))

    def read_update_weights(self, round_index: RoundIndex, site_id: SiteId) -> bytes:
        return self.store.get(self.layout.update_weights_key(round_index, site_id))

    def read_update_weights_verified(
        self, round_index: RoundIndex, site_id: SiteId, max_bytes: int | None = None
    ) -> tuple[bytes, Sha256Hex | None]:
        """The update file and its sha256 where the store vouches for it (``get_verified``);
        ``ObjectTooLargeError`` above ``max_bytes``, before the file is read."""
        key = self.layout.update_weights_key(round_index, site_id)
        return self.store.get_verified(key, max_bytes)

    # ---- round results, ledger, state ------------------------------------------------------

    def write_result(self, result: RoundResult) -> None:
        self._put_once_or_same(
            self.layout.result_key(result.round_index), _dump(result), history=True
        )

    def read_result(self, round_index: RoundIndex) -> RoundResult | None:
        return self._read_model(self.layout.result_key(round_index), RoundResult)

    def write_ledger_entry(self, entry: LedgerEntry) -> None:
        self._put_once_or_same(
            self.layout.ledger_key(entry.round_index), _dump(entry), history=True
        )

    def read_ledger_entry(self, round_index: RoundIndex) -> LedgerEntry | None:
        return self._read_model(self.layout.ledger_key(round_index), LedgerEntry)

    def read_state(self) -> tuple[FederationState, ETag] | None:
        return self._read_model_with_etag(self.layout.state_key(), FederationState)

    def write_state(self, state: FederationState, if_match: ETag | None) -> ETag:
        return self.store.replace(self.layout.state_key(), _dump(state), if_match)

    # ---- registry -----------------------------------------------------------------------

    def write_registration(self, registration: Registration, if_match: ETag | None) -> ETag:
        key = self.layout.registry_key(registration.site_id)
        return self.store.replace(key, _dump(registration), if_match)

    def read_registration_with_etag(self, site_id: SiteId) -> tuple[Registration, ETag] | None:
        return self._read_model_with_etag(self.layout.registry_key(site_id), Registration)

    def write_preflight(self, report: PreflightReport, stamp: str) -> None:
        self.store.put_new(self.layout.preflight_key(report.site_id, stamp), _dump(report))

    def list_preflights(self, site_id: SiteId) -> list[PreflightReport]:
        """Preflight reports written under ``site_id``'s own key (the only place it may write).

        A hospital that is still onboarding may write anything there: a report that is not
        one is skipped, logged and kept in ``skipped``; the others still count.
        """
        reports = []
        for key in self.store.list_keys(self.layout.preflight_prefix()):
            if self.layout.site_of_preflight_key(key) != site_id:
                continue
            try:  # a ranged read: a report of gigabytes is never downloaded
                head = self.store.get_head(key, MAX_PREFLIGHT_BYTES + 1)
            except ObjectNotFoundError:
                continue
            if len(head) > MAX_PREFLIGHT_BYTES:
                self._skip(key, "too_large", f"over {MAX_PREFLIGHT_BYTES} bytes")
                continue
            found = self._parse_or_skip(key, head, PreflightReport, "malformed_preflight")
            if found is not None and found.site_id == site_id:
                reports.append(found)
        return reports

    def _parse_or_skip(
        self, key: ObjectKey, data: bytes, model: type[_Model], reason: str
    ) -> _Model | None:
        """``data`` as ``model``, or None after recording why it is not one (``skipped``)."""
        try:
            document = model.model_validate_json(data)
        except ValidationError as err:
            self._skip(key, reason, first_error(err))
            return None
        self.skipped.pop(key, None)
        return document

    def _skip(self, key: ObjectKey, reason: str, detail: str) -> None:
        if key not in self.skipped:  # logged once, not at every poll
            log.warning("document_skipped", key=key, reason=reason, detail=detail[:300])
        self.skipped[key] = SkippedDocument(key, reason, detail[:500])

    def read_registration(self, site_id: SiteId) -> Registration | None:
        return self._read_model(self.layout.registry_key(site_id), Registration)

    def list_registrations(self) -> list[Registration]:
        """Every registration, re-reading only those written since this exchange last looked.

        The aggregator asks at every admission (a revocation takes effect at the next one):
        with 208 hospitals on S3 that was one LIST and 208 GETs per batch of answers, and
        is now one LIST and a GET per changed registration.
        """
        versions = self.store.list_versions(self.layout.registry_prefix())
        fresh: dict[str, tuple[str, Registration | None]] = {}
        for key, version in versions.items():
            if not key.endswith(".json"):
                continue
            cached = self._registrations.get(key)
            if cached is None or cached[0] != version:
                cached = (version, self._read_registration_or_skip(key))
            fresh[key] = cached
        for gone in self._registrations.keys() - fresh.keys():
            self.skipped.pop(gone, None)
        self._registrations = fresh
        return [registration for _, registration in fresh.values() if registration is not None]

    def _read_registration_or_skip(self, key: ObjectKey) -> Registration | None:
        """A registration, or None where it vanished.

        A malformed one (then in ``skipped``) stands as a revoked registration of the site
        its key names: one bad entry must stop neither the aggregator, ``fedsilo status``
        nor an approval, and must not readmit a site that was revoked either.
        """
        try:
            data = self.store.get(key)
        except ObjectNotFoundError:
            return None
        found = self._parse_or_skip(key, data, Registration, "malformed_registration")
        site_id = key.removeprefix(self.layout.registry_prefix()).removesuffix(".json")
        if found is not None and found.site_id != site_id:
            self._skip(key, "malformed_registration", f"names site {found.site_id[:80]!r}")
            found = None
        if found is not None or not SITE_ID_PATTERN.fullmatch(site_id):
            return found
        return Registration(
            site_id=site_id,
            joined_unix=0.0,
            status="revoked",
            note=f"registration unreadable ({self.skipped[key].detail[:200]}); the site is "
            "not admitted until its registration is written again",
        )

    # ---- feature moments (before round 1) -------------------------------------------------

    def write_moments(self, report: MomentsReport) -> None:
        """Write-once; a restarted hospital putting the same report again is fine."""
        self._put_once_or_same(self.layout.moments_key(report.site_id), _dump(report))

    def read_moments_bytes(self, site_id: SiteId) -> bytes | None:
        """The raw report (a hospital's input: the caller validates it)."""
        try:
            return self.store.get(self.layout.moments_key(site_id))
        except ObjectNotFoundError:
            return None

    def read_moments_bounded(self, site_id: SiteId, max_bytes: int) -> bytes | None:
        """``read_moments_bytes`` in one bounded read: ``ObjectTooLargeError`` above
        ``max_bytes``, before the body is read (a report of gigabytes is never downloaded)."""
        try:
            return self.store.get_bounded(self.layout.moments_key(site_id), max_bytes)
        except ObjectNotFoundError:
            return None
