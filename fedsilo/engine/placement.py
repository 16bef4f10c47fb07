"""Which hospitals each simulation worker (or MPI rank) hosts.

A round ends when the slowest worker has answered for all its hospitals, so the workers should
get equal work, not equal numbers of hospitals: hospitals differ in size by orders of
magnitude, so dealing them round-robin leaves one worker with more training than the other
and the other core idle for the difference every round. Where the data source knows each
hospital's training rows
without loading them, hospitals are placed by the steps a round of training makes on them
(longest first, each to the least-loaded worker); otherwise they are dealt round-robin.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from fl_core.config import TrainingConfig
from fl_core.data.base import DataSource
from fl_core.types import SiteId

ANSWER_STEPS = 20
"""What answering costs a worker besides training (evaluation, reading the global model,
writing the update), counted in optimizer steps of the default model. Fitted to the CPU each
call took in a 20-hospital simulation whose two workers hosted different numbers of
hospitals; with the earlier guess (3) the worker hosting more small hospitals finished last."""


def round_robin(sites: Sequence[SiteId], hosts: int) -> list[tuple[SiteId, ...]]:
    """Host h gets ``sites[h::hosts]``."""
    return [tuple(sites[index::hosts]) for index in range(hosts)]


def balanced(
    sites: Sequence[SiteId], hosts: int, cost: Mapping[SiteId, float]
) -> list[tuple[SiteId, ...]]:
    """Longest-processing-time-first: within 4/3 of the best possible makespan, and in
    practice within one hospital's cost of it. Each host keeps its sites in ``sites`` order."""
    position = {site: index for index, site in enumerate(sites)}
    loads = [(0.0, host) for host in range(hosts)]
    chosen: list[set[SiteId]] = [set() for _ in range(hosts)]
    for site in sorted(sites, key=lambda s: (-cost[s], position[s])):
        load, host = heapq.heappop(loads)
        chosen[host].add(site)
        heapq.heappush(loads, (load + cost[site], host))
    return [tuple(s for s in sites if s in part) for part in chosen]


def place_sites(
    source: DataSource, hosts: int, training: TrainingConfig
) -> list[tuple[SiteId, ...]]:
    """Hospitals per host, by planned training steps where the source knows its row counts."""
    from fl_client.tabular import planned_steps  # the trainer's module imports torch

    sites = source.site_ids()
    rows = source.train_rows()
    if rows is None or set(rows) != set(sites):
        return round_robin(sites, hosts)
    cost = {site: planned_steps(rows[site], training) + ANSWER_STEPS for site in sites}
    return balanced(sites, hosts, cost)
