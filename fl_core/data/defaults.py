"""Defaults of the data preparers, in a module that imports nothing.

The command line shows them in ``--help``; importing the preparers themselves would import
pandas into every ``fedsilo`` command before anything happens.
"""

EICU_MIN_STAYS = 1
"""eICU keeps every hospital by default: small hospitals are the normal case, not an error."""

TABLE_MIN_STAYS = 10
"""A site needs this many labelled rows to be kept (fewer cannot train or be evaluated)."""
