"""Imports every strategy module so that each registers its builder with ``register``.

Strategy modules add one import line here.
"""

from __future__ import annotations
