"""Admitted updates spooled to local disk and read back chunk by chunk.

Median, trimmed mean and Krum need every update of a round at once. Holding them in memory is
O(sites x model); instead each admitted update's verified bytes go to a private temporary
directory, and the rules read the same slice of every file at a time
(``safe_open(...).get_slice``), so memory stays O(sites x chunk).

Updates are always read back in ``site_id`` order, whatever order they arrived in: a rule's
result is then bitwise independent of arrival order (and a resumed aggregator that replays
the round recomputes exactly the model ``result.json`` names).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import safe_open

from fl_core.errors import AggregationError
from fl_core.serialisation import TensorSpec
from fl_core.types import SiteId, Weights
from fl_server.aggregator import AdmittedUpdate

Float64 = npt.NDArray[np.float64]
Index = tuple[slice, ...]


@dataclass(frozen=True)
class SpooledUpdate:
    site_id: SiteId
    num_examples: int
    path: Path


@dataclass(frozen=True)
class Block:
    """At most ``chunk_elements`` parameters of one tensor: ``index`` selects them."""

    name: str
    index: Index


def block_indices(shape: tuple[int, ...], limit: int) -> Iterator[Index]:
    """Slices that cut a tensor of ``shape`` into C-order blocks of at most ``limit`` elements.

    Whole runs of the leading axis while a sub-tensor fits in ``limit``; otherwise one index of
    the leading axis at a time, cut further along the next axes. A scalar is one block.
    """
    if not shape:
        yield ()
        return
    inner = math.prod(shape[1:])
    if inner == 0 or shape[0] == 0:
        return
    if inner <= limit:
        step = max(1, limit // inner)
        for start in range(0, shape[0], step):
            yield (slice(start, min(start + step, shape[0])),)
        return
    for i in range(shape[0]):
        for rest in block_indices(shape[1:], limit):
            yield (slice(i, i + 1), *rest)


class UpdateSpool:
    """One round's admitted updates as files in a private temporary directory."""

    def __init__(self, chunk_elements: int, directory: str | None = None) -> None:
        if chunk_elements < 1:
            raise AggregationError("chunk_elements must be >= 1")
        self.chunk_elements = chunk_elements
        self._parent = directory
        self._dir: Path | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._specs: dict[str, TensorSpec] = {}
        self._updates: dict[SiteId, SpooledUpdate] = {}

    def reset(self, specs: Mapping[str, TensorSpec]) -> None:
        """Drop the previous round's files and start an empty spool."""
        self.close()
        self._dir = Path(tempfile.mkdtemp(prefix="fedsilo-spool-", dir=self._parent))
        # removed even if the aggregator is dropped without finish() (e.g. a failed round)
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._specs = dict(specs)

    def add(self, update: AdmittedUpdate) -> None:
        """Write the verified bytes to disk; nothing of the update stays in memory."""
        if self._dir is None:
            raise AggregationError("add() before begin_round()")
        if update.site_id in self._updates:
            raise AggregationError(
                f"site {update.site_id} was handed to the aggregator twice in one round"
            )
        if update.num_examples <= 0:
            raise AggregationError(
                f"site {update.site_id} reports num_examples {update.num_examples}; must be > 0"
            )
        path = self._dir / f"{len(self._updates):06d}.safetensors"
        path.write_bytes(update.data)
        self._updates[update.site_id] = SpooledUpdate(update.site_id, update.num_examples, path)

    @property
    def updates(self) -> list[SpooledUpdate]:
        """Spooled updates in ``site_id`` order (the order every rule reads them in)."""
        return [self._updates[site] for site in sorted(self._updates)]

    @property
    def specs(self) -> dict[str, TensorSpec]:
        return dict(self._specs)

    def blocks(self) -> Iterator[Block]:
        """Every parameter once, tensor by tensor in name order, in chunks."""
        for name in sorted(self._specs):
            for index in block_indices(self._specs[name].shape, self.chunk_elements):
                yield Block(name, index)

    def empty_model(self) -> Weights:
        return {name: np.empty(spec.shape, dtype=spec.dtype) for name, spec in self._specs.items()}

    def open(self, which: Sequence[int] | None = None) -> SpoolReader:
        """Open the spooled files (all, or the positions ``which`` of ``updates``)."""
        updates = self.updates
        if not updates:
            raise AggregationError("no updates to aggregate; check round.min_sites")
        chosen = [updates[i] for i in which] if which is not None else updates
        return SpoolReader([u.path for u in chosen])

    def close(self) -> None:
        """Delete the spooled files (after ``finish`` and before a new round)."""
        if self._finalizer is not None:
            self._finalizer()  # removes the directory once
        self._finalizer = None
        self._dir = None
        self._updates = {}


class SpoolReader:
    """Open safetensors handles over spooled files; ``read`` stacks one block of each."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._stack = contextlib.ExitStack()
        self._files: list[Any] = [
            self._stack.enter_context(safe_open(str(path), framework="numpy")) for path in paths
        ]

    def read(self, block: Block) -> Float64:
        """``(updates x elements)`` float64 rows: one block of every open update."""
        rows: Float64 | None = None
        for i, handle in enumerate(self._files):
            part = np.asarray(handle.get_slice(block.name)[block.index])
            if rows is None:
                rows = np.empty((len(self._files), part.size), dtype=np.float64)
            rows[i] = part.reshape(-1)
        if rows is None:
            raise AggregationError("no updates to read")
        return rows

    def __enter__(self) -> SpoolReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()
