"""How much one hospital may weigh in a round: its registered rows, and a share of the total.

FedAvg weights each update by the ``num_examples`` its manifest claims, and the manifest is
the hospital's own word. Two bounds, both on by default, keep a claim from buying the model:

1. **The registered count.** Before round 1 every hospital reports its training split's
   feature moments (``fl_client.moments``), ``num_examples`` included, write-once under its
   own key; the coordinating centre builds the first model's standardisation from them. A
   training answer claiming more rows than that report is **refused**
   (``num_examples_exceeds_registered``), never clipped: the honest client counts both from
   the same split (``SiteData.train.num_examples``: the moments report, the trainer's
   ``TrainResult``, DP-SGD's plan), so no honest hospital ever claims a row more, and a claim
   over it is a fault or a lie that should be seen in ``result.json``, not quietly trimmed
   into a model. A claim below it is accepted (a hospital may train on fewer rows). Where
   some invited hospitals reported and one did not, that one's training answers are refused
   (``num_examples_unregistered``): skipping the report must not escape the bound. Where no
   invited hospital reported at all (an in-process simulation, whose hospitals are not
   members, builds its standardisation in memory), there is nothing to check against, and
   the round loop says so once.

2. **The share cap** (``round.max_weight_share``, default 0.5). At round open, from the
   registered counts of the invited hospitals, the largest weight ``T`` is found such that
   no hospital's ``min(count, T)`` is more than that share of the sum (water-filling: the
   largest are trimmed to ``T``, the rest keep their counts); each admitted update is then
   added with weight ``min(claim, floor(T))``. The weights are known before the streaming sum
   (memory stays O(model)), the result is exactly the capped weighted mean when every invited
   hospital answers, and a restart recomputes the same weights. When some do not answer, the
   share is of the invited federation, so a hospital's share of that round's sum can exceed
   the cap by what the missing ones would have weighed; it never exceeds it by anything it
   claims. When ``share * hospitals < 1`` the cap cannot be met and every hospital weighs
   the smallest count (the plain mean).

   Why 0.5: it is the largest cap under which no single member decides the model alone,
   including in a two-hospital federation. It costs something: where one hospital
   legitimately holds most of the data, its weight is trimmed to the others' sum, and the
   model leans towards the smaller hospitals (in a two-hospital federation FedAvg becomes
   the plain mean of the two). A federation that trusts its members' sizes sets 1.0 (plain
   FedAvg); one of many similar hospitals can set it lower (e.g. 0.2).

What a colluding minority (``f`` of ``n`` hospitals, each honest about nothing) can still do:

- **FedAvg** (and FedProx, SCAFFOLD's model mean, norm-bounded FedAvg): each colluder weighs
  at most its registered count and at most ``max_weight_share``; together they weigh their
  summed share, and within it they move the mean as far as their updates go (norm-bounded
  FedAvg bounds how far: ``clip_norm`` per update). A minority cannot outweigh the honest
  majority's registered rows, but the mean has no breakdown point: any one update with a
  large enough value moves it arbitrarily far. The bounds limit *weight*, not *values*; the
  robust strategies limit values.
- **Robust strategies** (``fl_core.robust_aggregation``): the coordinate-wise median and
  trimmed mean ignore weights by design and tolerate ``f < n/2`` (median) or ``f <= trim``
  (trimmed mean) arbitrary updates, each kept value lying within the honest range. Krum
  selects updates by distance and then averages the selected ones weighted by (bounded)
  counts: colluders that are selected weigh at most their capped share. Colluders can still
  bias every kept value towards the edge of the honest range, round after round.
- **FedAdam / FedYogi / FedAvgM** (``fl_core.server_optimizers``): the pseudo-gradient is the
  bounded weighted mean above, but the server optimizer remembers it: moments carry a
  minority's push into later rounds (momentum ``beta1``), and an adaptive step normalises by
  the second moment, so a small consistent push is not shrunk the way the plain mean shrinks
  it. The bounds cap each round's push; they do not undo what the moments accumulate.
- **Secure aggregation** hides each update, and each hospital weights its own update inside
  the masked sum: the cap cannot be applied there (the round loop does not), while the
  registered-count refusal still bounds every claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

import structlog

from fl_core.errors import ObjectTooLargeError, ObjectUnreadableError, UpdateRejectedError
from fl_core.exchange.protocol import Exchange
from fl_core.types import SiteId
from fl_server.moments import check_report_once

log = structlog.get_logger("fedsilo.server")


def read_registered_examples(
    exchange: Exchange, sites: Iterable[SiteId], max_num_examples: int, max_bytes: int
) -> dict[SiteId, int | None]:
    """The training rows each of ``sites`` reported before round 1, for those with a report.

    None for a report that registers nothing: larger than ``max_bytes`` (refused by the read
    itself, before the body), unreadable, not parsing, naming another site or federation, or
    claiming more than ``admission.max_num_examples``. Reports are write-once: the caller
    reads each site's once, and looks again only for a site that had none.
    """
    registered: dict[SiteId, int | None] = {}
    for site_id in sites:
        try:  # one read, sized before its body
            data = exchange.read_moments_bounded(site_id, max_bytes)
            if data is None:
                continue  # no report yet
        except ObjectTooLargeError:
            data = None  # registers nothing, and is never downloaded
        except ObjectUnreadableError as err:  # SSE-C, its own KMS key: the hospital's doing
            log.warning("registered_examples_unreadable", site_id=site_id, detail=str(err))
            registered[site_id] = None
            continue
        registered[site_id] = _registered_rows(exchange, site_id, data, max_num_examples)
    return registered


class RegisteredRows:
    """The rows each invited hospital registered, read once per site and per process.

    Reports missing so far are looked for again at every round (a hospital may report late);
    one that was read is never read again (reports are write-once).
    """

    def __init__(self, exchange: Exchange, max_num_examples: int, max_bytes: int) -> None:
        self.exchange = exchange
        self.max_num_examples = max_num_examples
        self.max_bytes = max_bytes
        self._found: dict[SiteId, int | None] = {}
        self._told_unbounded = False

    def of(self, invited: Iterable[SiteId]) -> dict[SiteId, int]:
        """The registered rows of ``invited`` sites that have a valid report."""
        sites = list(invited)
        missing = [s for s in sites if s not in self._found]
        if missing:
            self._found.update(
                read_registered_examples(
                    self.exchange, missing, self.max_num_examples, self.max_bytes
                )
            )
        registered = {s: rows for s in sites if (rows := self._found.get(s)) is not None}
        if not registered and not self._told_unbounded:
            self._told_unbounded = True
            log.info(
                "weights_unbounded",
                detail="no invited hospital reported its training rows before round 1, so "
                "num_examples is neither checked against them nor capped by "
                "round.max_weight_share",
            )
        return registered


def _registered_rows(
    exchange: Exchange, site_id: SiteId, data: bytes | None, max_num_examples: int
) -> int | None:
    """The rows one report registers (``data`` None: it was too large to read)."""
    rows, problem = _rows_or_problem(exchange, site_id, data, max_num_examples)
    if problem is not None:
        log.warning("registered_examples_refused", site_id=site_id, reason=problem)
    return rows


def _rows_or_problem(
    exchange: Exchange, site_id: SiteId, data: bytes | None, max_num_examples: int
) -> tuple[int | None, str | None]:
    """The rows of a report that passes every rule the standardisation applies (a report it
    refuses registers nothing, so an impossible one cannot raise the cap), or the reason."""
    if data is None:
        return None, "too_large"
    try:
        rows, _ = check_report_once(data, site_id, exchange.federation_id, None, max_num_examples)
    except UpdateRejectedError as rejected:
        return None, rejected.reason
    return rows, None


def check_registered_claim(site_id: SiteId, claimed: int, registered: Mapping[SiteId, int]) -> None:
    """Refuse a training claim over the site's registered count; raises
    ``UpdateRejectedError``. ``registered`` empty: nothing to check (see the module)."""
    if not registered:
        return
    found = registered.get(site_id)
    if found is None:
        raise UpdateRejectedError(
            "num_examples_unregistered",
            f"site {site_id} reported no training rows before round 1 (no valid moments "
            "report), so its weight cannot be bounded; the hospital must publish its report",
        )
    if claimed > found:
        raise UpdateRejectedError(
            "num_examples_exceeds_registered",
            f"num_examples {claimed} exceeds the {found} training rows site {site_id} "
            "reported before round 1",
        )


def weight_cap(counts: Iterable[int], max_share: float) -> int | None:
    """The largest weight ``T`` a hospital may have so that ``min(count, T)`` is at most
    ``max_share`` of the sum over all ``counts``; None when no count needs trimming.

    Rounded down to whole examples, so a trimmed hospital's share is at most ``max_share``.
    """
    order = sorted((c for c in counts if c > 0), reverse=True)
    share = Fraction(max_share).limit_denominator(1_000_000)  # exact: same T on every restart
    if not order or share >= 1:
        return None
    total = sum(order)
    if order[0] <= share * total:
        return None
    if share * len(order) < 1:
        return order[-1]  # the cap cannot be met: everyone weighs the smallest count
    rest = total
    for capped in range(1, len(order)):
        rest -= order[capped - 1]
        free = 1 - capped * share
        if free <= 0:
            break
        threshold = share * rest / free
        if order[capped] <= threshold:
            return math.floor(threshold)
    return order[-1]
