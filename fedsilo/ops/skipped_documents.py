"""What the operator is shown of the documents ``Exchange`` skipped as malformed.

A hospital writes its preflight reports, and a registration can be damaged in the store:
the exchange skips either (``Exchange.skipped``) instead of failing. ``fedsilo status`` and
``fedsilo onboard approve``/``check`` name each one, so a person sees why a site stays
pending or stands as revoked. Keys and details are hospital-written text: they are cut
short and stripped of anything a terminal would act on before they are shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from fl_core.exchange.protocol import Exchange

_MAX_SHOWN = 160


@dataclass(frozen=True)
class SkippedRow:
    """One skipped document, ready to print: its site (or ``-``), key, reason and detail."""

    site_id: str
    key: str
    reason: str
    detail: str

    def line(self) -> str:
        return f"skipped {self.key} (site {self.site_id}): {self.reason}: {self.detail}"


def printable(text: str, limit: int = _MAX_SHOWN) -> str:
    """``text`` with control characters as ``?``, cut to ``limit`` characters."""
    shown = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _site_of(exchange: Exchange, key: str) -> str:
    layout = exchange.layout
    site = layout.site_of_preflight_key(key)
    if site is not None:
        return site
    prefix = layout.registry_prefix()
    if key.startswith(prefix) and key.endswith(".json"):
        return key[len(prefix) : -len(".json")]
    return "-"


def skipped_rows(exchange: Exchange) -> list[SkippedRow]:
    """What ``exchange`` skipped so far, by key."""
    return [
        SkippedRow(
            site_id=printable(_site_of(exchange, key), 64),
            key=printable(key),
            reason=printable(skipped.reason, 40),
            detail=printable(skipped.detail),
        )
        for key, skipped in sorted(exchange.skipped.items())
    ]
