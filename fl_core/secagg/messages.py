"""The documents of the secure aggregation protocol, one round of it, in the order written.

1. ``SecAggRoster`` (aggregator, ``global.secagg-roster.json``, with the global model): the
   invited sites' long-term public keys (from their registrations), threshold and field.
2. ``SecAggAdvert`` (each hospital, its own update key): its fresh mask public key and, for
   every site of the roster, Shamir shares of its self-mask seed and mask key, encrypted so
   that only that site can read them.
3. ``SecAggSetup`` (aggregator, ``global.secagg-setup.json``): who advertised (the round's
   participants) and their mask public keys; hospitals mask against exactly these.
4. The masked update (the ordinary update files, uint64 tensors).
5. ``SecAggUnmaskRequest`` (aggregator, ``global.secagg-unmask.json``, write-once):
   survivors S, dropped D, and each survivor's encrypted shares relayed to it.
6. ``SecAggUnmaskAnswer`` (each survivor, its own update key): shares of ``b_u`` for u in S
   and of the mask key of v for v in D, never both for one site.

Each document names the sha256 of the one before it, so a hospital can tell that what it
answers follows from what it advertised.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fl_core.secagg import masking

HEX32 = r"^[0-9a-f]{64}$"
SHA256 = r"^[0-9a-f]{64}$"
ShareHex = Annotated[str, Field(pattern=r"^[0-9a-f]{132}$")]
"""One Shamir share (66 bytes, ``fl_core.secagg.shamir.SHARE_BYTES``) as hex."""


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RosterEntry(_Document):
    site_id: str
    public_key: str = Field(pattern=HEX32, description="long-term X25519 key, hex")


class SecAggRoster(_Document):
    federation_id: str
    round_index: int = Field(ge=1)
    global_sha256: str = Field(pattern=SHA256)
    sites: list[RosterEntry]
    threshold: int = Field(ge=2)
    modulus_bits: int = Field(ge=24, le=64)
    fractional_bits: int = Field(ge=1)
    clip: float = Field(gt=0)
    max_weight: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SecAggRoster:
        ids = [entry.site_id for entry in self.sites]
        if len(set(ids)) != len(ids) or ids != sorted(ids):
            raise ValueError("roster sites must be unique and sorted")
        if self.threshold > len(ids):
            raise ValueError(f"threshold {self.threshold} > {len(ids)} sites")
        return self

    def x_of(self, site_id: str) -> int:
        """A site's Shamir x coordinate: its 1-based position in the roster."""
        for index, entry in enumerate(self.sites):
            if entry.site_id == site_id:
                return index + 1
        raise KeyError(site_id)

    def public_key(self, site_id: str) -> bytes:
        for entry in self.sites:
            if entry.site_id == site_id:
                return bytes.fromhex(entry.public_key)
        raise KeyError(site_id)


class EncryptedShares(_Document):
    """ChaCha20-Poly1305 of (share of b_u || share of the mask key), for one recipient."""

    nonce: str = Field(pattern=r"^[0-9a-f]{24}$")
    ciphertext: str = Field(pattern=r"^[0-9a-f]{2,1024}$")


class SecAggAdvert(_Document):
    federation_id: str
    site_id: str
    round_index: int = Field(ge=1)
    roster_sha256: str = Field(pattern=SHA256)
    mask_public_key: str = Field(pattern=HEX32)
    self_seed_sha256: str = Field(
        pattern=SHA256, description="commits to b_u so a wrong reconstruction is caught"
    )
    shares: dict[str, EncryptedShares]

    @field_validator("mask_public_key")
    @classmethod
    def _usable_key(cls, value: str) -> str:
        if not masking.is_usable_public_key(bytes.fromhex(value)):
            raise ValueError("mask_public_key is a low-order point: no secret can be agreed")
        return value


class SecAggSetup(_Document):
    federation_id: str
    round_index: int = Field(ge=1)
    roster_sha256: str = Field(pattern=SHA256)
    participants: dict[str, str] = Field(description="site id -> mask public key (hex)")


class SecAggUnmaskRequest(_Document):
    federation_id: str
    round_index: int = Field(ge=1)
    setup_sha256: str = Field(pattern=SHA256)
    survivors: list[str]
    dropped: list[str]
    relayed: dict[str, dict[str, EncryptedShares]] = Field(
        description="recipient -> sender -> the sender's encrypted shares for it"
    )


class SecAggUnmaskAnswer(_Document):
    federation_id: str
    site_id: str
    round_index: int = Field(ge=1)
    request_sha256: str = Field(pattern=SHA256)
    self_mask_shares: dict[str, ShareHex] = Field(description="survivor -> share of its b_u")
    mask_key_shares: dict[str, ShareHex] = Field(description="dropped -> share of its mask key")

    @model_validator(mode="after")
    def _never_both(self) -> SecAggUnmaskAnswer:
        both = self.self_mask_shares.keys() & self.mask_key_shares.keys()
        if both:
            raise ValueError(f"an answer may not reveal both secrets of {sorted(both)}")
        return self
