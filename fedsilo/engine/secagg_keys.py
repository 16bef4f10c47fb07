"""Hospitals' long-term secure aggregation keys on disk, and their registrations.

A hospital's private X25519 key never leaves its own state folder (file mode 0600); its
public half goes into its registration, from which the aggregator builds each round's roster.
``fedsilo onboard request`` makes a real hospital's key; the simulation makes one per site
and registers it as ``fedsilo onboard approve`` would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fl_core.errors import ConfigError
from fl_core.exchange.manifests import Registration
from fl_core.exchange.protocol import Exchange
from fl_core.ids import check_site_id
from fl_core.secagg import masking
from fl_core.types import SiteId

KEY_FILE_SUFFIX = ".secagg-key"


def key_path(key_dir: Path, site_id: SiteId) -> Path:
    return key_dir / f"{check_site_id(site_id)}{KEY_FILE_SUFFIX}"


def create_key(path: Path) -> bytes:
    """A new private key written 0600 (refuses to overwrite: a key in use must not change)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = masking.private_bytes(masking.new_private_key())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise ConfigError(f"{path} already holds a secure aggregation key; keep it") from err
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    return masking.public_bytes(masking.load_private(raw))


def load_key(path: Path) -> bytes:
    """The raw private key; refuses a file others can read."""
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(
            f"secure aggregation key {path} not found; run `fedsilo onboard request` for this "
            "hospital (it makes the key) or turn privacy.secagg off"
        ) from err
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others; chmod 600 {path}")
    if len(raw) != masking.KEY_BYTES:
        raise ConfigError(f"{path} is not a {masking.KEY_BYTES}-byte X25519 private key")
    return raw


def hospital_public_key(path: Path) -> bytes:
    """The hospital's public key: from its key file, made (0600) on first use."""
    if path.exists():
        return masking.public_bytes(masking.load_private(load_key(path)))
    return create_key(path)


def register_simulated_sites(
    exchange: Exchange,
    sites: Sequence[SiteId],
    key_dir: Path,
    clock: Callable[[], float] = time.time,
) -> None:
    """One key per site and an active registration naming its public half (idempotent)."""
    for site_id in sites:
        public = hospital_public_key(key_path(key_dir, site_id))
        found = exchange.read_registration_with_etag(site_id)
        if found is not None and found[0].secagg_public_key == public.hex():
            continue
        now = clock()
        registration = Registration(
            site_id=site_id,
            joined_unix=now,
            status="active",
            changed_unix=now,
            note="simulated hospital",
            secagg_public_key=public.hex(),
        )
        exchange.write_registration(registration, found[1] if found else None)
