"""The twin as a data source: synthesised once into a cache, then read by the real reader.

``make run`` trains on it, so the demo federation exercises the same path as real eICU
tables: five CSV tables, the cohort and feature builder, per-hospital prepared folders. A
twin is a pure function of (hospitals, stays, seed), so it is cached under a key of those
and built at most once; concurrent builders each write a private folder and the first
rename wins.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fl_core.config import TwinDataConfig
from fl_core.data.eicu.prepare import prepare_eicu
from fl_core.data.eicu.synth import synthesise
from fl_core.data.prepared import PreparedFolderSource

TWIN_FORMAT = 3
"""Bump when the generator or the preparation changes what a cached twin holds."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedsilo" / "twins"


def twin_key(twin: TwinDataConfig, seed: int) -> str:
    return f"h{twin.hospitals}-n{twin.stays}-m{twin.min_stays}-s{seed}-v{TWIN_FORMAT}"


def materialise_twin(twin: TwinDataConfig, federation_seed: int) -> Path:
    """The prepared folders of this twin, building them if the cache lacks them."""
    seed = federation_seed if twin.seed is None else twin.seed
    cache = twin.cache_dir or default_cache_dir()
    target = cache / twin_key(twin, seed)
    prepared = target / "prepared"
    if (prepared / "schema.json").is_file():
        return prepared
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        synthesise(scratch / "tables", hospitals=twin.hospitals, stays=twin.stays, seed=seed)
        prepare_eicu(scratch / "tables", scratch / "prepared", min_stays=twin.min_stays, seed=seed)
        try:
            scratch.rename(target)
        except OSError:
            if not (prepared / "schema.json").is_file():
                raise  # not a lost race: a real failure to write the cache
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return prepared


def twin_source(twin: TwinDataConfig, federation_seed: int) -> PreparedFolderSource:
    return PreparedFolderSource(materialise_twin(twin, federation_seed))
