"""What a hostile member hospital can write with the one grant it has.

A hospital role may write ``rounds/*/updates/{site_id}.*``; IAM's ``*`` also matches ``/``, so
that grant covers ``updates/{own}.x/{other}.json``, keys that sit under another hospital's
prefix (``updates/{other}.x/updates/{own}.json``) and keys of rounds that have not opened yet.
Its onboarding preflight and its feature moments are its own bytes too. ``MemberWriter``
writes each of these attacks into a running federation's exchange, as that role could:

- ``bad-planter`` plants, before the federation starts, keys naming every honest hospital in
  every round (the aggregator must still accept each honest hospital, and count the keys);
- ``bad-flood`` floods its own prefix with junk keys in every round;
- the ``bad-crash-*`` sites answer with safetensors headers built to crash a parser (5000
  levels of nesting, ``1e999``, ``2**70`` and negative shapes and offsets);
- every invited bad site reports malformed feature moments, and pending sites write
  malformed onboarding preflight reports;
- on S3, ``bad-ssec`` stores its update with SSE-C, a key the aggregator does not hold
  (``SseCUploader``, in a federation of its own: an aggregator that dies of the refused read
  must not hide how it fares against the other attacks).

Every bad site's own answer is otherwise garbage, so the honest hospitals' model must come
out bit-identical to an honest-only run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from chaos.attacks import header_json, signed_update
from chaos.federation import Federation
from fedsilo.testing.manifests import answer_to
from fedsilo.testing.processes import Proc
from fl_core.errors import ObjectNotFoundError
from fl_core.exchange.manifests import GlobalManifest, Registration
from fl_core.exchange.s3_store import S3Store
from fl_core.hashing import sha256_hex
from fl_core.serialisation import decode_weights
from fl_core.types import Weights

PLANTER = "bad-planter"
FLOODER = "bad-flood"
SSEC = "bad-ssec"
NESTING = 5000
GARBAGE = b"{not json"

NAMED_REASONS = ("malformed_", "unreadable", "wrong_", "too_large", "non_finite")
"""Reasons that name what was wrong with a file; anything else (or a crash) is a miss."""


@dataclass(frozen=True)
class CrashHeader:
    site: str
    name: str
    craft: Callable[[bytes], bytes]


def _nested(signed: bytes) -> bytes:
    """The signed file with a key whose value is ``NESTING`` lists deep."""
    header, payload = header_json(signed)
    text = json.dumps(header)[:-1] + ', "nest": ' + "[" * NESTING + "]" * NESTING + "}"
    return len(text).to_bytes(8, "little") + text.encode() + payload


def _entry_field(signed: bytes, field: str, values: list[object]) -> bytes:
    """The first tensor's ``shape`` or ``data_offsets`` replaced by ``values`` (a string
    value is written into the JSON as is: ``1e999`` is no JSON number Python can dump)."""
    header, payload = header_json(signed)
    name = sorted(k for k in header if k != "__metadata__")[0]
    entry = dict(header[name])  # type: ignore[call-overload]
    raw = {f"@{i}@": v for i, v in enumerate(values) if isinstance(v, str)}
    entry[field] = [f"@{i}@" if isinstance(v, str) else v for i, v in enumerate(values)]
    text = json.dumps({**header, name: entry})
    for placeholder, literal in raw.items():
        text = text.replace(f'"{placeholder}"', literal)
    return len(text).to_bytes(8, "little") + text.encode() + payload


def _offsets(signed: bytes, make: Callable[[int, int], list[object]]) -> bytes:
    header, _ = header_json(signed)
    name = sorted(k for k in header if k != "__metadata__")[0]
    start, end = header[name]["data_offsets"]  # type: ignore[index]
    return _entry_field(signed, "data_offsets", make(start, end))


CRASH_HEADERS = (
    CrashHeader("bad-crash-deep", f"header nested {NESTING} levels deep", _nested),
    CrashHeader(
        "bad-crash-shape-inf", "shape 1e999", lambda s: _entry_field(s, "shape", ["1e999"])
    ),
    CrashHeader("bad-crash-shape-huge", "shape 2**70", lambda s: _entry_field(s, "shape", [2**70])),
    CrashHeader("bad-crash-shape-neg", "shape -1", lambda s: _entry_field(s, "shape", [-1])),
    CrashHeader(
        "bad-crash-offset-inf", "offset 1e999", lambda s: _offsets(s, lambda a, b: [a, "1e999"])
    ),
    CrashHeader(
        "bad-crash-offset-huge", "offset 2**70", lambda s: _offsets(s, lambda a, b: [a, 2**70])
    ),
    CrashHeader(
        "bad-crash-offset-neg", "negative offsets", lambda s: _offsets(s, lambda a, b: [-8, b])
    ),
)

MALFORMED_MOMENTS: dict[str, Callable[[str], bytes]] = {
    "not JSON": lambda site: GARBAGE,
    f"nested {NESTING} levels": lambda site: (
        f'{{"federation_id": "chaos", "site_id": "{site}", "num_examples": 28, "count": '
        + "[" * NESTING
        + "]" * NESTING
        + ', "total": [], "total_sq": []}'
    ).encode(),
    "counts 1e999": lambda site: _moments(site, 28, "[1e999, 1e999]"),
    "num_examples 2**70": lambda site: _moments(site, 2**70, "[1, 1]"),
    "negative counts": lambda site: _moments(site, 28, "[-5, -5]"),
    "counts as text": lambda site: _moments(site, 28, '["many", "more"]'),
}

MALFORMED_PREFLIGHTS: dict[str, Callable[[str], bytes]] = {
    "not JSON": lambda site: GARBAGE,
    f"nested {NESTING} levels": lambda site: (
        f'{{"federation_id": "chaos", "site_id": "{site}", "account_id": "1", '
        '"checked_unix": 1, "checks": ' + "[" * NESTING + "]" * NESTING + "}"
    ).encode(),
    "checked_unix 1e999, checks not a list": lambda site: (
        f'{{"federation_id": "chaos", "site_id": "{site}", "account_id": "1", '
        '"checked_unix": 1e999, "checks": {"ok": true}}'
    ).encode(),
}


def _moments(site: str, num_examples: int, values: str) -> bytes:
    return (
        f'{{"federation_id": "chaos", "site_id": "{site}", "num_examples": {num_examples}, '
        f'"count": {values}, "total": {values}, "total_sq": {values}}}'
    ).encode()


def pending_sites() -> list[str]:
    return [f"bad-pending-{i}" for i in range(1, len(MALFORMED_PREFLIGHTS) + 1)]


def invited_member_sites() -> list[str]:
    return [PLANTER, FLOODER, *(c.site for c in CRASH_HEADERS)]


def answered(federation: Federation, round_index: int, site: str) -> bool:
    """A site's canonical answer is in the exchange (the listing may hold planted names)."""
    layout = federation.exchange.layout
    for key in (
        layout.update_weights_key(round_index, site),
        layout.update_manifest_key(round_index, site),
    ):
        try:
            federation.store.size(key)
        except ObjectNotFoundError:
            continue
        return True
    return False


class MemberWriter:
    """Writes the member attacks but SSE-C into ``federation``'s exchange."""

    def __init__(self, federation: Federation, junk_per_round: int) -> None:
        self.federation = federation
        self.layout = federation.exchange.layout
        self.junk_per_round = junk_per_round
        self.planted: dict[int, int] = {}
        """Keys planted (by the planter and the flooder) under each round's prefix."""
        self.moments: dict[str, str] = {}
        """Invited bad site -> the malformation of the moments report it wrote."""

    @property
    def rounds(self) -> range:
        return range(1, self.federation.rounds + 2)

    def _put(self, key: str, data: bytes) -> None:
        self.federation.store.put_new(key, data)

    def _plant(self, round_index: int, key: str, data: bytes) -> None:
        self._put(key, data)
        self.planted[round_index] = self.planted.get(round_index, 0) + 1

    # ---- before the federation starts -----------------------------------------------------

    def prepare(self) -> None:
        """Pending sites with malformed preflights, malformed moments from every invited bad
        site, and the planted and junk keys of every round, before any round opens."""
        exchange = self.federation.exchange
        for site, (_, craft) in zip(pending_sites(), MALFORMED_PREFLIGHTS.items(), strict=True):
            exchange.write_registration(
                Registration(site_id=site, joined_unix=0.0, status="pending"), None
            )
            self._put(self.layout.preflight_key(site, "chaos"), craft(site))
        kinds = list(MALFORMED_MOMENTS.items())
        for i, site in enumerate(invited_member_sites()):
            name, craft = kinds[i % len(kinds)]
            self._put(self.layout.moments_key(site), craft(site))
            self.moments[site] = name
        for round_index in self.rounds:
            self._plant_round(round_index)
            self._flood_round(round_index)

    def _plant_round(self, round_index: int) -> None:
        updates = self.layout.updates_prefix(round_index)
        for other in self.federation.honest:
            self._plant(round_index, f"{updates}{PLANTER}.x/{other}.json", b"{}")
            self._plant(round_index, f"{updates}{PLANTER}.x/{other}.safetensors", b"junk")
            self._plant(round_index, f"{updates}{other}.x/updates/{PLANTER}.json", b"{}")

    def _flood_round(self, round_index: int) -> None:
        updates = self.layout.updates_prefix(round_index)
        shapes = (
            f"{updates}{FLOODER}.junk-{{i:05d}}",
            f"{updates}{FLOODER}.{{i:05d}}.json",
            f"{updates}{FLOODER}.x/{{i:05d}}.json",
            f"{updates}{FLOODER}.y/z/{{i:05d}}.safetensors",
        )
        for i in range(self.junk_per_round):
            self._plant(round_index, shapes[i % len(shapes)].format(i=i), b"junk")

    # ---- one round ------------------------------------------------------------------------

    def write_round(self, manifest: GlobalManifest, watch: list[Proc]) -> None:
        """Once every honest hospital answered: each bad site's own answer (garbage, a crash
        header in training rounds); the last of them closes the round."""
        r = manifest.round_index
        wait_for_honest(self.federation, r, watch)
        for site in (PLANTER, FLOODER):
            self._put(self.layout.update_manifest_key(r, site), GARBAGE)
        if manifest.task != "train":
            for crash in CRASH_HEADERS:
                self._put(self.layout.update_manifest_key(r, crash.site), GARBAGE)
            return
        weights = moved_weights(self.federation, manifest)
        for crash in CRASH_HEADERS:
            data = crash.craft(signed_update(weights, answer_to(manifest, crash.site)))
            self._put(self.layout.update_weights_key(r, crash.site), data)


def moved_weights(federation: Federation, manifest: GlobalManifest) -> Weights:
    """The round's global model plus 0.25 everywhere: an update far from any honest one."""
    data = federation.exchange.read_global_weights(manifest)
    return {
        k: np.asarray(v, np.float32) + np.float32(0.25) for k, v in decode_weights(data).items()
    }


def wait_for_honest(federation: Federation, round_index: int, watch: list[Proc]) -> None:
    federation.wait_for(
        f"honest answers of round {round_index}",
        lambda: all(answered(federation, round_index, s) for s in federation.honest),
        watch,
    )


class SseCUploader:
    """``bad-ssec``: in every training round a valid update stored with SSE-C, under a key
    only this hospital holds, written through ``client`` (S3 only); garbage when evaluating."""

    def __init__(self, federation: Federation, client: Any) -> None:
        self.federation = federation
        self.client = client

    def prepare(self) -> None:
        """Garbage moments: the aggregator waits for every invited site's before round 1."""
        layout = self.federation.exchange.layout
        self.federation.store.put_new(layout.moments_key(SSEC), GARBAGE)

    def write_round(self, manifest: GlobalManifest, watch: list[Proc]) -> None:
        federation = self.federation
        layout = federation.exchange.layout
        r = manifest.round_index
        wait_for_honest(federation, r, watch)
        if manifest.task != "train":
            federation.store.put_new(layout.update_manifest_key(r, SSEC), GARBAGE)
            return
        store = federation.store
        assert isinstance(store, S3Store)
        data = signed_update(moved_weights(federation, manifest), answer_to(manifest, SSEC))
        self.client.put_object(
            Bucket=store.bucket,
            Key=store.prefix + layout.update_weights_key(r, SSEC),
            Body=data,
            Metadata={"sha256": sha256_hex(data)},
            SSECustomerAlgorithm="AES256",
            SSECustomerKey=os.urandom(32),
        )


def named(reason: str | None) -> bool:
    return reason is not None and reason.startswith(NAMED_REASONS)
