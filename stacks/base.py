"""What both stacks share: zones known at synthesis, so that no AWS lookup is ever needed."""

from __future__ import annotations

from aws_cdk import Environment, Stack
from constructs import Construct


class FederationStack(Stack):
    """A stack bound to one account and region whose zones never need a context lookup.

    CDK asks the account for its zone names (a ``cdk synth`` with credentials) whenever a VPC
    is built in a stack with an explicit environment. The zones here are either the context's
    ``availability_zones`` or placeholders that ``PrivateNetwork`` replaces with ``Fn::GetAZs``
    in the template, so synthesis stays offline.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        account: str,
        region: str,
        zones: tuple[str, ...] | None,
        description: str,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=account, region=region),
            description=description,
        )
        self._zones = list(zones or (f"{region}a", f"{region}b"))

    @property
    def availability_zones(self) -> list[str]:
        return list(self._zones)
