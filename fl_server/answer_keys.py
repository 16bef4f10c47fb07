"""Which listed keys of a round are answers, and of whom: by exact name, never by parsing.

A listed key's last segment proves nothing: ``updates/site-a.x/site-b.json`` ends like
site-b's answer but is not one of site-b's names. The bucket policy grants each
hospital its exact names only (``fl_core.exchange.key_grammar``), but a local folder has no
policy, and the aggregator must not depend on one being right. A listed key is an answer
only where it equals a canonical name of an invited site
(``ExchangeLayout.canonical_update_keys``); every other key under the round's updates prefix
is foreign: counted, a few kept as samples for ``result.json``, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable

from fl_core.exchange.layout import ExchangeLayout, UpdateKind
from fl_core.types import ObjectKey, RoundIndex, SiteId

FOREIGN_KEY_SAMPLES = 20
"""Foreign keys named in ``result.json`` and the log; the rest are only counted."""
_SAMPLE_CHARS = 300
"""A key is at most 1024 bytes; a sample is cut so that twenty stay readable."""


class RoundKeys:
    """Classifies the keys listed under one round's updates prefix, each key once.

    The aggregator lists the prefix at every poll; a key classified at an earlier poll is
    skipped with one set lookup, so junk a hospital planted is looked up in the canonical
    names, counted and reported once, not at every poll.
    """

    def __init__(
        self, layout: ExchangeLayout, round_index: RoundIndex, invited_sites: Iterable[SiteId]
    ) -> None:
        self.round_index = round_index
        self._canonical: dict[ObjectKey, tuple[SiteId, UpdateKind]] = layout.canonical_update_keys(
            round_index, invited_sites
        )
        self._seen: set[ObjectKey] = set()
        self.answered: dict[SiteId, None] = {}
        """Sites with an answer object listed (a training or a manifest-only answer)."""
        self.foreign_count = 0
        self.foreign_samples: list[ObjectKey] = []

    def classify(self, listed: Iterable[ObjectKey]) -> tuple[list[SiteId], list[ObjectKey]]:
        """The sites whose answer appears in ``listed`` for the first time, in listing order,
        and the foreign keys seen for the first time (counted here; the caller logs them)."""
        new_sites: list[SiteId] = []
        new_foreign: list[ObjectKey] = []
        seen = self._seen
        for key in listed:
            if key in seen:
                continue
            seen.add(key)
            found = self._canonical.get(key)
            if found is None:
                new_foreign.append(key)
                continue
            site_id, kind = found
            if kind != "secagg" and site_id not in self.answered:
                self.answered[site_id] = None
                new_sites.append(site_id)
        room = FOREIGN_KEY_SAMPLES - len(self.foreign_samples)
        self.foreign_samples.extend(sample(key) for key in new_foreign[: max(room, 0)])
        self.foreign_count += len(new_foreign)
        return new_sites, new_foreign


def sample(key: ObjectKey) -> str:
    """A foreign key as ``result.json`` and the log name it: cut, since a key may be 1 kB."""
    return key[:_SAMPLE_CHARS]
