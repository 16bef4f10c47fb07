"""Registration states of the hospitals, driven by what the exchange holds.

A hospital role may not write the registry (it could un-revoke itself), so the coordinating
side turns a pending registration active when it finds a passing preflight report under the
hospital's own update prefix, which only that hospital's role can write.
"""

from __future__ import annotations

from fl_core.errors import PreconditionFailedError
from fl_core.exchange.manifests import Registration
from fl_core.exchange.protocol import Exchange
from fl_core.types import SiteId


def activate_verified_sites(exchange: Exchange, now: float) -> list[SiteId]:
    """Pending registrations with a passing preflight become active; returns those changed."""
    activated = []
    for registration in exchange.list_registrations():
        if registration.status != "pending":
            continue
        reports = exchange.list_preflights(registration.site_id)
        passing = [r for r in reports if r.passed and r.checked_unix >= registration.joined_unix]
        if not passing:
            continue
        found = exchange.read_registration_with_etag(registration.site_id)
        if found is None or found[0].status != "pending":
            continue
        current, etag = found
        latest = max(passing, key=lambda r: r.checked_unix)
        try:
            exchange.write_registration(
                Registration.model_validate(
                    {
                        **current.model_dump(),
                        "status": "active",
                        "changed_unix": now,
                        "note": f"preflight passed at {latest.checked_unix:.0f}",
                    }
                ),
                etag,
            )
        except PreconditionFailedError:
            continue  # changed meanwhile (e.g. revoked): leave it as the other writer set it
        activated.append(registration.site_id)
    return activated
