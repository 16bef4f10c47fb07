"""Hostile answers written straight into a running federation's exchange.

Each bad site is invited (so that its file reaches admission's deeper checks) and writes one
hostile file per round; ``stranger`` is not invited. Files are written with the exchange's
own store (as a hospital's role could) or, where the attack needs it, raw: a plain S3 PUT
with a wrong ``x-amz-meta-sha256``, an overwrite after the aggregator decided. The expected
reason is the one admission must record in ``result.json`` (for the uninvited site: no
decision, its key counted among the round's foreign keys); a site whose file is accepted, or
rejected for another reason, counts as a miss.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from chaos.federation import Federation
from fedsilo.testing.manifests import answer_to
from fedsilo.testing.processes import Proc
from fl_core.admission import update_metadata
from fl_core.exchange.fs_store import LocalDirectoryStore
from fl_core.exchange.manifests import GlobalManifest, Registration, UpdateManifest
from fl_core.exchange.s3_store import S3Store
from fl_core.hashing import sha256_hex
from fl_core.serialisation import decode_weights, encode_weights
from fl_core.types import Weights

HEADER_BYTES = 100 * 1024 * 1024
STRANGER = "stranger"
REVOKED = "bad-revoked"
CHANGED = "bad-changed"
LAST = "bad-header-100mb"  # the slowest write goes last: the round closes once it is in
FOREIGN = "foreign"
"""The outcome of an uninvited site's answer: no decision, one of the round's foreign keys."""


@dataclass(frozen=True)
class Attack:
    site: str
    name: str
    expected: str


def attacks(on_s3: bool, round_index: int) -> list[Attack]:
    """The round's hostile answers, in writing order (the uninvited one first: a round
    closes once every invited site answered, so a stranger written last could miss it)."""
    found = [
        Attack(STRANGER, "unknown site", FOREIGN),
        Attack("bad-impostor", "another hospital's id", "site_mismatch"),
        Attack("bad-stale", "stale round", "stale_round"),
        Attack("bad-copy", "copy of an honest file (same bytes, same nonce)", "site_mismatch"),
        Attack("bad-truncated", "truncated", "malformed_tensors"),
        Attack("bad-extra", "extra tensor", "wrong_tensors"),
        Attack("bad-missing", "missing tensor", "wrong_tensors"),
        Attack("bad-dtype", "wrong dtype", "wrong_dtype"),
        Attack("bad-shape", "wrong shape", "wrong_shape"),
        # NaN and Inf are found while the sum runs, after the claimed rows are checked, so a
        # site without registered rows is refused by its claim first; registering these two
        # would move the reference's share cap (tests/fl_server/test_non_finite_in_sum.py
        # covers a registered site's NaN)
        Attack("bad-nan", "NaN", "num_examples_unregistered"),
        Attack("bad-inf", "Inf", "num_examples_unregistered"),
        Attack("bad-oversize", "oversize (10x)", "too_large"),
        Attack("bad-disagree", "header and bytes disagree", "malformed_tensors"),
        Attack(REVOKED, "revoked site", "revoked_site"),
        Attack("bad-pickle", "pickle named .safetensors", "malformed_tensors"),
        Attack("bad-offsets", "offsets past the end", "malformed_tensors"),
        Attack("bad-header-claim", "header length claims 100 MB", "malformed_tensors"),
        Attack(CHANGED, "file changed after it was decided", "stale_round"),
    ]
    if round_index > 1:  # round 1 has no earlier nonce to replay
        found.append(Attack("bad-replay", "replay of an accepted nonce", "replayed"))
    else:
        found.append(
            Attack("bad-replay", "copy of an honest file (same bytes, same nonce)", "site_mismatch")
        )
    if on_s3:
        found.append(
            Attack("bad-checksum", "x-amz-meta-sha256 and bytes disagree", "sha256_mismatch")
        )
    found.append(Attack(LAST, "100 MB header", "too_large"))
    return found


def invited_bad_sites(on_s3: bool) -> list[str]:
    return [a.site for a in attacks(on_s3, 2) if a.site != STRANGER]


def signed_update(weights: Weights, manifest: UpdateManifest) -> bytes:
    return encode_weights(weights, update_metadata(manifest))


def header_json(data: bytes) -> tuple[dict[str, object], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def with_header(header: dict[str, object], payload: bytes, pad_to: int = 0) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * max(0, pad_to - len(text))
    return struct.pack("<Q", len(text)) + text + payload


class HostileWriter:
    """Writes every attack of a round into ``federation``'s exchange."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.exchange = federation.exchange
        self.layout = federation.exchange.layout
        self.on_s3 = isinstance(federation.store, S3Store)
        self.oversize_ratio = 0.0

    # ---- raw writes ------------------------------------------------------------------------

    def _put(self, key: str, data: bytes) -> None:
        self.federation.store.put_new(key, data)

    def _overwrite(self, key: str, data: bytes) -> None:
        """Replace a written file in place, as a hospital with write access could."""
        store = self.federation.store
        if isinstance(store, S3Store):
            store.client.put_object(
                Bucket=store.bucket,
                Key=store.prefix + key,
                Body=data,
                Metadata={"sha256": sha256_hex(data)},
            )
            return
        assert isinstance(store, LocalDirectoryStore)
        path = store.root / key
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".fedsilo-tmp")
        os.write(fd, data)
        os.close(fd)
        os.replace(tmp, path)

    def _put_wrong_checksum(self, key: str, data: bytes) -> None:
        store = self.federation.store
        assert isinstance(store, S3Store)
        store.client.put_object(
            Bucket=store.bucket,
            Key=store.prefix + key,
            Body=data,
            Metadata={"sha256": sha256_hex(data + b"other bytes")},
        )

    # ---- before the federation starts ------------------------------------------------------

    def prepare(self) -> None:
        """A revoked registration, and garbage feature moments from every bad site (the
        aggregator waits for every invited site's moments before round 1)."""
        self.exchange.write_registration(
            Registration(site_id=REVOKED, joined_unix=time.time(), status="revoked"), None
        )
        for site in invited_bad_sites(self.on_s3):
            self._put(self.layout.moments_key(site), b"{not json")

    # ---- one round ------------------------------------------------------------------------

    def write_round(self, manifest: GlobalManifest, watch: list[Proc]) -> list[Attack]:
        if manifest.task != "train":
            return self._write_evaluation(manifest)
        r = manifest.round_index
        weights = {
            k: np.asarray(v) + np.float32(0.25)
            for k, v in decode_weights(self.exchange.read_global_weights(manifest)).items()
        }
        honest = self.federation.honest
        self.federation.wait_for(
            f"honest answers of round {r}",
            lambda: set(honest) <= set(self.exchange.list_answered_sites(r)),
            watch,
        )
        copy_round = r - 1 if r > 1 else r
        copied = self.exchange.read_update_weights(copy_round, honest[0])
        old_nonce = ""
        if r > 1:
            previous = UpdateManifest.model_validate_json(
                self.exchange.read_update_manifest_bytes(r - 1, honest[1])
            )
            old_nonce = previous.nonce
        done = []
        for attack in attacks(self.on_s3, r):
            data = self._craft(attack, manifest, weights, copied, old_nonce)
            key = self.layout.update_weights_key(r, attack.site)
            if attack.site == "bad-checksum":
                self._put_wrong_checksum(key, data)
            else:
                self._put(key, data)
            if attack.site == CHANGED:
                self._change_after_decision(manifest, key, weights, watch)
            done.append(attack)
        return done

    def _change_after_decision(
        self, manifest: GlobalManifest, key: str, weights: Weights, watch: list[Proc]
    ) -> None:
        """Once the aggregator has decided on the file, swap in one it would accept."""

        def decided() -> bool:
            found = self.exchange.read_state()
            return found is not None and CHANGED in found[0].decisions

        self.federation.wait_for(f"a decision on {CHANGED}", decided, watch)
        self._overwrite(key, signed_update(weights, answer_to(manifest, CHANGED)))

    def _craft(
        self,
        attack: Attack,
        manifest: GlobalManifest,
        weights: Weights,
        copied: bytes,
        old_nonce: str,
    ) -> bytes:
        site = attack.site
        names = sorted(weights)
        signed = signed_update(weights, answer_to(manifest, site))
        builders: dict[str, Callable[[], bytes]] = {
            "bad-impostor": lambda: signed_update(
                weights, answer_to(manifest, self.federation.honest[1])
            ),
            "bad-stale": lambda: signed_update(
                weights, answer_to(manifest, site, round_index=manifest.round_index + 1)
            ),
            "bad-copy": lambda: copied,
            "bad-truncated": lambda: signed[:-7],
            "bad-extra": lambda: signed_update(
                {**weights, "evil": np.ones(3, np.float32)}, answer_to(manifest, site)
            ),
            "bad-missing": lambda: signed_update(
                {k: weights[k] for k in names[:-1]}, answer_to(manifest, site)
            ),
            "bad-dtype": lambda: signed_update(
                {k: v.astype(np.float64) for k, v in weights.items()}, answer_to(manifest, site)
            ),
            "bad-shape": lambda: signed_update(
                {**weights, names[0]: np.zeros((*weights[names[0]].shape, 2), np.float32)},
                answer_to(manifest, site),
            ),
            "bad-nan": lambda: signed_update(_poisoned(weights, np.nan), answer_to(manifest, site)),
            "bad-inf": lambda: signed_update(_poisoned(weights, np.inf), answer_to(manifest, site)),
            "bad-oversize": lambda: self._oversize(weights, manifest, site, len(signed)),
            "bad-disagree": lambda: _disagree(signed),
            REVOKED: lambda: signed,
            STRANGER: lambda: signed,
            "bad-pickle": lambda: pickle.dumps({name: weights[name].tolist() for name in names}),
            "bad-offsets": lambda: _offsets_past_end(signed),
            "bad-header-claim": lambda: struct.pack("<Q", HEADER_BYTES) + signed[8:],
            CHANGED: lambda: signed_update(
                weights, answer_to(manifest, site, round_index=manifest.round_index + 1)
            ),
            "bad-replay": lambda: (
                signed_update(weights, answer_to(manifest, site, nonce=old_nonce))
                if old_nonce
                else copied
            ),
            "bad-checksum": lambda: signed,
            LAST: lambda: _header_100mb(signed),
        }
        return builders[site]()

    def _oversize(
        self, weights: Weights, manifest: GlobalManifest, site: str, honest: int
    ) -> bytes:
        """Ten times an honest answer (the run's ``admission.max_update_bytes`` is 4x)."""
        pad = np.zeros(9 * honest // 4, np.float32)
        data = signed_update({**weights, "pad": pad}, answer_to(manifest, site))
        self.oversize_ratio = len(data) / honest
        return data

    def _write_evaluation(self, manifest: GlobalManifest) -> list[Attack]:
        """The final round evaluates: every bad site sends a garbage manifest."""
        done = []
        for site in invited_bad_sites(self.on_s3):
            self._put(self.layout.update_manifest_key(manifest.round_index, site), b"{not json")
            done.append(Attack(site, "garbage manifest (evaluation round)", "malformed_manifest"))
        return done


def _poisoned(weights: Weights, value: float) -> Weights:
    out = {k: np.array(v, copy=True) for k, v in weights.items()}
    first = sorted(out)[0]
    out[first].flat[0] = value
    return out


def _disagree(signed: bytes) -> bytes:
    """The header's byte range for one tensor no longer matches its shape and dtype."""
    header, payload = header_json(signed)
    name = sorted(k for k in header if k != "__metadata__")[0]
    entry = dict(header[name])  # type: ignore[call-overload]
    start, end = entry["data_offsets"]
    entry["data_offsets"] = [start, end - 4]
    return with_header({**header, name: entry}, payload)


def _offsets_past_end(signed: bytes) -> bytes:
    header, payload = header_json(signed)
    name = sorted(k for k in header if k != "__metadata__")[-1]
    entry = dict(header[name])  # type: ignore[call-overload]
    start, _ = entry["data_offsets"]
    entry["data_offsets"] = [start, len(payload) + 4096]
    return with_header({**header, name: entry}, payload)


def _header_100mb(signed: bytes) -> bytes:
    header, payload = header_json(signed)
    return with_header(header, payload, pad_to=HEADER_BYTES)
