"""What a hospital keeps of each answer so that it can later check the ledger itself.

``fl_core.exchange.receipts`` is the file format; this is the hospital's side of it: the
sha256 of the update it wrote (hashed by the hospital when it wrote it, the very digest S3
verified the upload against; never taken from anyone else), the ledger head the
round's global model named, and whether its previous update was accepted in the ledger entry
that head names (read now, while the hospital can still compare it with the head it was
given).
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from fl_core.errors import AccessDeniedError, ExchangeError
from fl_core.exchange.manifests import GlobalManifest, UpdateManifest
from fl_core.exchange.protocol import Exchange
from fl_core.exchange.receipts import Receipt, append_receipt, last_receipt, receipts_path
from fl_core.types import Sha256Hex

log = structlog.get_logger("fedsilo.client")


def saw_accepted(
    exchange: Exchange, previous: Receipt | None, manifest: GlobalManifest
) -> bool | None:
    """Whether ``previous``'s update is accepted in the entry ``manifest`` names as head.

    None where there is nothing to see: no training update in the round just before, no head,
    or an entry that cannot be read or does not hash to the head (logged: the hospital's
    ``ledger verify`` names it).
    """
    if (
        previous is None
        or previous.update_sha256 is None
        or previous.round_index != manifest.round_index - 1
        or manifest.ledger_head is None
    ):
        return None
    try:
        entry = exchange.read_ledger_entry(previous.round_index)
    except (AccessDeniedError, ExchangeError) as err:
        log.warning("ledger_entry_unreadable", round_index=previous.round_index, error=str(err))
        return None
    if entry is None or entry.entry_hash != manifest.ledger_head:
        log.warning("ledger_head_mismatch", round_index=previous.round_index)
        return None
    return (previous.site_id, previous.update_sha256) in entry.accepted


def keep_receipt(
    exchange: Exchange,
    state_dir: Path,
    update: UpdateManifest,
    manifest: GlobalManifest,
    update_sha256: Sha256Hex | None,
) -> None:
    """Append this answer's receipt (``fedsilo ledger verify --site-id`` reads them)."""
    path = receipts_path(state_dir, update.site_id)
    receipt = Receipt(
        federation_id=update.federation_id,
        site_id=update.site_id,
        round_index=update.round_index,
        task=update.task,
        global_sha256=manifest.sha256,
        ledger_head=manifest.ledger_head,
        update_sha256=update_sha256,
        previous_update_accepted=saw_accepted(exchange, last_receipt(path), manifest),
        recorded_unix=time.time(),
    )
    append_receipt(path, receipt)
