"""Shared aliases so that signatures read the same everywhere."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

SiteId: TypeAlias = str
RoundIndex: TypeAlias = int
Sha256Hex: TypeAlias = str
ObjectKey: TypeAlias = str
ETag: TypeAlias = str
FloatArray: TypeAlias = npt.NDArray[np.floating]
Weights: TypeAlias = dict[str, npt.NDArray[np.generic]]
"""A model's tensors by name, as numpy arrays (the form the codec reads and writes)."""
