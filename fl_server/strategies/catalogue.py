"""Imports every strategy module so that each registers its builder with ``register``.

Strategy modules add one import line here.
"""

from __future__ import annotations

import fl_server.strategies.fedprox
import fl_server.strategies.norm_bounded
import fl_server.strategies.robust
import fl_server.strategies.scaffold
import fl_server.strategies.server_opt  # noqa: F401
