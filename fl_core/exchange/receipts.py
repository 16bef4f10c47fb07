"""A hospital's receipts: what it sent and what it was shown, kept on its own side.

The coordinating account can write everything in the exchange, the ledger included, and could
recompute the whole hash chain after changing history. What it cannot change is a record the
hospital keeps: the sha256 of each update it sent (hashed by the hospital itself) and the
ledger head each global model named when the hospital read it. ``fl_core.exchange.witness``
checks the ledger against these.

One JSON line per answered round, appended and never rewritten, so a crash loses at most the
line being written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fl_core.errors import ConfigError
from fl_core.exchange.manifests import SHA256_PATTERN, Task

RECEIPTS_FILE = "receipts.jsonl"
_TAIL_BYTES = 8192
"""Enough for several receipts (a few hundred bytes each) to find the last whole one."""


class Receipt(BaseModel):
    """One round a hospital answered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    federation_id: str
    site_id: str
    round_index: int = Field(ge=1)
    task: Task
    global_sha256: str = Field(pattern=SHA256_PATTERN, description="the model it answered")
    ledger_head: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="as that model's manifest named it"
    )
    update_sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="sha256 of the training update file it wrote, hashed here; None for an "
        "answer that is a manifest alone (evaluation, declined), which the ledger records "
        "without a digest",
    )
    previous_update_accepted: bool | None = Field(
        default=None,
        description="whether this hospital's update of the round before was accepted in that "
        "round's ledger entry, read when this round's model named the entry as head (None: "
        "no training update then, or the entry could not be read or did not match the head)",
    )
    recorded_unix: float


def receipts_path(state_dir: Path, site_id: str) -> Path:
    """Per site, beside its other state: one process may host several hospitals."""
    return state_dir / site_id / RECEIPTS_FILE


def append_receipt(path: Path, receipt: Receipt) -> None:
    """Append one line and sync it: a receipt is only worth having if it survives a crash.

    A line a crash cut short is ended first, so that it stays a line of its own (which
    ``read_receipts`` skips) instead of running into this one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = receipt.model_dump_json().encode() + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def last_receipt(path: Path) -> Receipt | None:
    """The newest complete receipt, read from the end of the file (it grows every round)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - _TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.split(b"\n")):
        try:
            return Receipt.model_validate_json(line)
        except ValidationError:
            continue  # empty, cut off by a crash, or the tail's partial first line
    return None


def read_receipts(path: Path) -> list[Receipt]:
    """Every receipt in ``path``; a missing file or an altered line is a ``ConfigError``.

    A line cut short by a crash mid-write is skipped: it is not JSON (a receipt's object ends
    with its last byte), where an altered line is JSON that is not a receipt.
    """
    try:
        text = path.read_text()
    except FileNotFoundError as err:
        raise ConfigError(
            f"no receipts file at {path}; pass the hospital's state folder (--state-dir, as "
            "given to `fedsilo client run`) and its --site-id"
        ) from err
    except OSError as err:
        raise ConfigError(f"cannot read receipts file {path}: {err}") from err
    receipts = []
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue  # empty, or cut off by a crash
        try:
            receipts.append(Receipt.model_validate(document))
        except ValidationError as err:
            raise ConfigError(
                f"receipts file {path} line {number} is malformed "
                f"({err.errors()[0]['msg']}); it was altered, restore it from a backup"
            ) from err
    return receipts
