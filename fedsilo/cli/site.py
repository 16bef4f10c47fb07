"""``fedsilo site``: a hospital's own view before and during a federation.

``check`` tests the hospital's prepared folder against the federation's feature schema and
writes the full report locally; the site policy commands join this group beside it.
"""

from __future__ import annotations

import typer

site_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="A hospital's readiness checks and site policy.",
)
