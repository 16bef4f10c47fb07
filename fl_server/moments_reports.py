"""What the checks found in each hospital's moments report, kept for the aggregator's process.

The aggregator reads every report twice before round 1: the standardisation
(``fl_server.moments.gather_moments``) and the weight bounds (``fl_server.weight_bounds``,
the rows each site registered). Parsing and checking a report with its data profile is the
costly part (milliseconds each, hundreds of hospitals), so it is done once per process and
its outcome, refusals included, served to both.

A report is reused only for the very same bytes under the same site and federation and the
same ``max_examples`` bound (its key holds the bytes' sha256): reports are write-once, but a
different byte string is checked again, never trusted to be the one checked before. The
checks that depend on the model's feature count are not kept here; the caller applies them
to the kept outcome, in the order a fresh check would, so each refusal keeps its reason.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

from fl_core.data.standardise import FeatureMoments
from fl_core.errors import UpdateRejectedError
from fl_core.hashing import sha256_hex
from fl_core.types import Sha256Hex, SiteId

MAX_KEPT_REPORT_BYTES = 256 << 20
"""The most report bytes whose outcomes are kept at once; the least recently used go first.
Far above a federation's reports (208 hospitals at the eICU model's 123 inputs: about 9 MB),
so none is checked twice before round 1, yet a process fed endless distinct reports keeps a
bounded number of outcomes (each a few kB: the moments, not the profile)."""


@dataclass(frozen=True)
class Refusal:
    """A check that failed: its reason and detail, raised afresh each time it is served."""

    reason: str
    detail: str

    def raise_again(self) -> NoReturn:
        raise UpdateRejectedError(self.reason, self.detail)


@dataclass(frozen=True)
class ReportFacts:
    """What a report that parsed, belongs where it sits and claims no more rows than allowed
    showed: all the aggregator uses of it, not the parsed report itself (hundreds of those,
    each with its data profile, would be megabytes of small objects kept alive)."""

    num_examples: int
    lengths: tuple[int, int, int]
    """How many ``count``, ``total`` and ``total_sq`` values it holds."""
    content: FeatureMoments | Refusal
    """Its moments, or why they are impossible (NaN, out of range, a profile that does not
    describe them). Only reached once the lengths agree with each other and the model."""


CheckedReport = ReportFacts | Refusal


class ReportKey(NamedTuple):
    sha256: Sha256Hex
    site_id: SiteId
    federation_id: str
    max_examples: int


def report_key(data: bytes, site_id: SiteId, federation_id: str, max_examples: int) -> ReportKey:
    return ReportKey(sha256_hex(data), site_id, federation_id, max_examples)


class CheckedReports:
    """The outcome of each report checked in this process, bounded by the reports' bytes."""

    def __init__(self, max_bytes: int = MAX_KEPT_REPORT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.checks = 0
        """How many reports were checked rather than served from here."""
        self._kept: OrderedDict[ReportKey, tuple[CheckedReport, int]] = OrderedDict()
        self._kept_bytes = 0
        self._lock = threading.Lock()

    def checked(
        self, key: ReportKey, num_bytes: int, check: Callable[[], CheckedReport]
    ) -> CheckedReport:
        """The kept outcome for ``key``, or ``check()``'s, kept for next time."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                return kept[0]
        outcome = check()  # outside the lock: another thread may check another report
        with self._lock:
            self.checks += 1
            if key not in self._kept:
                self._kept[key] = (outcome, num_bytes)
                self._kept_bytes += num_bytes
            while self._kept_bytes > self.max_bytes and self._kept:
                _, (_, dropped) = self._kept.popitem(last=False)
                self._kept_bytes -= dropped
        return outcome

    def clear(self) -> None:
        """Forget every outcome, and the count of checks."""
        with self._lock:
            self._kept.clear()
            self._kept_bytes = 0
            self.checks = 0


CHECKED_REPORTS = CheckedReports()
"""This process's: the standardisation and the weight bounds share it."""
