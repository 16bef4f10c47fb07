"""Reconstructing what removes the masks from the survivors' sum (the aggregator's maths).

After collection, survivors are the participants whose masked update was admitted and
dropped the rest. From ``t`` Shamir shares each, the aggregator recovers every survivor's
self-mask seed ``b_u`` and every dropped participant's mask key, each checked against what
its owner committed to in its advert, so one hostile hospital's wrong share cannot make the
round unmask with a wrong secret.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fl_core.secagg import masking, shamir
from fl_core.secagg.messages import (
    SecAggAdvert,
    SecAggRoster,
    SecAggSetup,
    SecAggUnmaskAnswer,
    SecAggUnmaskRequest,
)
from fl_core.types import SiteId


@dataclass(frozen=True)
class UnmaskMaterial:
    """What removes the masks from the survivors' sum."""

    survivors: dict[SiteId, int]  # site -> num_examples
    self_seeds: list[bytes]
    dropped_pairs: list[tuple[SiteId, SiteId, bytes]]


@dataclass(frozen=True)
class RejectedShare:
    """A share outside the field: its holder's fault, left out of the reconstruction."""

    holder: SiteId
    site_id: SiteId
    detail: str


@dataclass(frozen=True)
class Reconstruction:
    """The material, and what stops the round (``problems``) or was left out."""

    material: UnmaskMaterial
    problems: list[str] = field(default_factory=list)
    rejected_shares: list[RejectedShare] = field(default_factory=list)


def reconstruct_checked(
    shares: Sequence[shamir.Share],
    threshold: int,
    fingerprint: Callable[[bytes], str],
    expected: str,
    max_tries: int = 256,
) -> bytes | None:
    """A 32-byte secret from ``threshold`` of ``shares`` whose ``fingerprint`` is the one its
    owner advertised (seed commitment, or public key); other subsets are tried when a wrong
    share spoils the first, so one faulty hospital among more than ``t`` answers does not
    fail the round."""
    for subset in itertools.islice(itertools.combinations(shares, threshold), max_tries):
        secret = shamir.reconstruct(subset, threshold)
        if secret >> 256:
            continue  # not a 32-byte secret: a wrong share is in this subset
        candidate = shamir.secret_to_bytes(secret, 32)
        if fingerprint(candidate) == expected:
            return candidate
    return None


def reconstruct_material(
    roster: SecAggRoster,
    setup: SecAggSetup,
    adverts: Mapping[SiteId, SecAggAdvert],
    request: SecAggUnmaskRequest,
    answers: Mapping[SiteId, SecAggUnmaskAnswer],
    summed: Mapping[SiteId, int],
) -> Reconstruction:
    """Self-mask seeds of the survivors and pair seeds of the dropped, from the answers.

    ``summed``: the weight each survivor's update was added to the sum with.
    """
    fed, r, t = roster.federation_id, roster.round_index, roster.threshold
    problems: list[str] = []
    rejected: list[RejectedShare] = []

    def shares_of(
        site: SiteId, pick: Callable[[SecAggUnmaskAnswer], dict[str, str]]
    ) -> list[shamir.Share]:
        found = []
        for holder, answer in sorted(answers.items()):
            if site not in pick(answer):
                continue
            try:  # a share outside the field is the holder's fault, not the round's
                share = bytes.fromhex(pick(answer)[site])
                found.append(shamir.Share.from_bytes(roster.x_of(holder), share))
            except ValueError as err:
                rejected.append(RejectedShare(holder, site, str(err)))
        return found

    self_seeds = []
    for site in request.survivors:
        b_u = reconstruct_checked(
            shares_of(site, lambda a: a.self_mask_shares),
            t,
            masking.seed_commitment,
            adverts[site].self_seed_sha256,
        )
        if b_u is None:
            problems.append(f"{site}: no {t} self-mask shares match its commitment")
            continue
        self_seeds.append(masking.self_mask_seed(b_u, fed, r, site))
    dropped_pairs = []
    for site in request.dropped:
        raw = reconstruct_checked(
            shares_of(site, lambda a: a.mask_key_shares),
            t,
            lambda secret: masking.public_bytes(masking.load_private(secret)).hex(),
            setup.participants[site],
        )
        if raw is None:
            problems.append(f"{site}: no {t} mask-key shares match its advertised key")
            continue
        key = masking.load_private(raw)
        for survivor in request.survivors:
            public = bytes.fromhex(setup.participants[survivor])
            seed = masking.pair_seed(key, public, fed, r, site, survivor)
            dropped_pairs.append((survivor, site, seed))
    survivors = {s: summed.get(s, 0) for s in request.survivors}
    material = UnmaskMaterial(survivors, self_seeds, dropped_pairs)
    return Reconstruction(material, problems, rejected)
