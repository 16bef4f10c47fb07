"""Fault hooks for the chaos suite: SIGKILL a fedsilo process at a chosen write or step.

Installed only by ``chaos.shim`` (and its fork server) in a process the suite starts;
nothing in the product imports this module, so a deployed ``fedsilo`` has no fault hook at
all. The hooks wrap the store classes' write methods and the trainer, and read one
environment variable, ``FEDSILO_CHAOS_KILL``: a JSON rule saying where to die.

- ``{"at": "write", "key": "rounds/000002/result.json", "when": "before"|"after"}``: die just
  before or just after the write of the first key ending in ``key``;
- ``{"at": "state", "advances_past": 2, "when": ...}``: the same, at the first write of
  ``state.json`` that leaves round 2 (round_index > 2, or phase done or failed);
- ``{"at": "train", "round": 2}``: die on entering training for round 2;
- ``{"at": "midwrite", "key": "updates/site-002", "round": 2}``: die half-way through writing
  the temporary file of that key (local store): a torn write.

``FEDSILO_CHAOS_JOURNAL`` names a file to which every completed write appends one line,
``key sha256``: the suite counts from it how often each round artefact was created.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

KILL_ENV = "FEDSILO_CHAOS_KILL"
JOURNAL_ENV = "FEDSILO_CHAOS_JOURNAL"


def die() -> None:
    """SIGKILL this process: no cleanup, no flush, as a crash or an OOM kill."""
    os.kill(os.getpid(), signal.SIGKILL)


def _matches(rule: dict[str, Any], key: str, data: bytes) -> bool:
    if rule["at"] == "write":
        return key.endswith(rule["key"])
    if rule["at"] == "state" and key.endswith("/state.json"):
        state = json.loads(data)
        left = state["round_index"] > rule["advances_past"]
        return bool(left or state["phase"] in ("done", "failed"))
    return False


def _journal(key: str, data: bytes) -> None:
    path = os.environ.get(JOURNAL_ENV)
    if path:
        line = f"{key} {hashlib.sha256(data).hexdigest()}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _wrap_write(method: Callable[..., Any], rule: dict[str, Any] | None) -> Callable[..., Any]:
    def write(self: Any, key: str, data: bytes, *args: Any, **kwargs: Any) -> Any:
        hit = rule is not None and _matches(rule, key, data)
        if hit and rule is not None and rule["when"] == "before":
            die()
        result = method(self, key, data, *args, **kwargs)
        _journal(key, data)
        if hit:
            die()
        return result

    return write


def _install_midwrite(rule: dict[str, Any]) -> None:
    from fl_core.exchange import fs_store

    original = fs_store.LocalDirectoryStore._write_temp
    wanted = f"rounds/{rule['round']:06d}/{rule['key']}"

    def torn(self: Any, path: Path, data: bytes) -> Path:
        if wanted in path.as_posix():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, _ = fs_store.tempfile.mkstemp(
                dir=path.parent, prefix=".", suffix=fs_store._TMP_SUFFIX
            )
            os.write(fd, data[: len(data) // 2])
            die()
        return original(self, path, data)

    fs_store.LocalDirectoryStore._write_temp = torn  # type: ignore[method-assign]


def _install_train(rule: dict[str, Any]) -> None:
    from fl_client import hospital

    original = hospital.private_training

    def training(trainer: Any, privacy: Any, round_index: int) -> Any:
        if round_index == rule["round"]:
            die()
        return original(trainer, privacy, round_index)

    hospital.private_training = training  # type: ignore[assignment]


def install() -> None:
    """Wrap the stores (journal and write kills) and, if asked, training or a torn write."""
    from fl_core.exchange.fs_store import LocalDirectoryStore
    from fl_core.exchange.s3_store import S3Store

    raw = os.environ.get(KILL_ENV)
    rule: dict[str, Any] | None = json.loads(raw) if raw else None
    write_rule = rule if rule is not None and rule["at"] in ("write", "state") else None
    for store in (LocalDirectoryStore, S3Store):
        for name in ("put_new", "replace"):
            setattr(store, name, _wrap_write(getattr(store, name), write_rule))
    if rule is not None and rule["at"] == "midwrite":
        _install_midwrite(rule)
    if rule is not None and rule["at"] == "train":
        _install_train(rule)
