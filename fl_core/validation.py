"""One line from a pydantic ``ValidationError``: where the document is wrong, and how.

Rejections of hostile documents quote it in ``result.json``, the log and the CLI, where
the full error (every failing field, the input echoed back) would be long and noisy.
"""

from __future__ import annotations

from pydantic import ValidationError


def first_error(err: ValidationError) -> str:
    """``"evaluation.histogram.bins: Input should be ..."``; ``document`` for the whole."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "document"
    return f"{where}: {first['msg']}"
