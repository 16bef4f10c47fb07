"""What a trainer must offer for a hospital to train it under DP-SGD.

Every trainer is a ``fl_client.trainer.ClientTrainer`` (the documented extension point). Only
some can train privately: DP-SGD needs a slot the hospital binds its privacy accountant to for
one round, and the number of epochs a round makes (the accountant plans its steps from it).
The check is structural, so a user's trainer that offers both trains privately as the default
``TabularTrainer`` does, without inheriting from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fl_client.private import HospitalPrivacy


@runtime_checkable
class PrivateTrainer(Protocol):
    """A trainer that trains through ``fl_client.private`` while a hospital's privacy is bound."""

    privacy: HospitalPrivacy | None
    """The hospital's DP-SGD state for the round being trained; None between rounds."""

    def local_epochs(self, num_examples: int) -> int:
        """Whole epochs one round makes over ``num_examples`` training rows."""
        ...
