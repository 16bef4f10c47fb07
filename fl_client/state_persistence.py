"""A deployed hospital refuses to run DP-SGD or secure aggregation without a persistent state.

The DP accountant (the epsilon spent so far) and the secure-aggregation private key live in
the client's state folder (``--state-dir``). In a container that folder is on the task's own
disk unless a volume is mounted there: a restarted task would start its privacy budget again
from zero, silently, and lose its key. The hospital stack mounts an encrypted EFS volume at
the state folder and says so in ``FEDSILO_STATE_PERSISTENT``; a task without it refuses to
start. A run outside ECS (a simulation, a laptop, a server with its own disk) is not checked:
there the folder is on a disk that outlives the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fl_core.config import FederationConfig
from fl_core.errors import ConfigError

ECS_TASK_MARKER = "ECS_CONTAINER_METADATA_URI_V4"
"""Set by ECS (on Fargate and on EC2) in every container of a task: the client is deployed."""

STATE_PERSISTENT_ENV = "FEDSILO_STATE_PERSISTENT"
"""Set by the hospital stack to the kind of volume mounted at the state folder."""

PERSISTENT_STATE_KINDS = frozenset({"efs"})
"""The values of ``STATE_PERSISTENT_ENV`` that name a volume which outlives the task."""


def state_that_must_persist(config: FederationConfig) -> list[str]:
    """The settings of ``config`` whose state is lost if the state folder is not persistent."""
    privacy = config.privacy
    settings = {
        "privacy.dp_sgd": privacy.dp_sgd is not None,
        "privacy.secagg": privacy.secagg.enabled,
    }
    return [name for name, enabled in settings.items() if enabled]


def require_persistent_state(
    config: FederationConfig, environ: Mapping[str, str] | None = None
) -> None:
    """Refuse to start an ECS task whose privacy state would be forgotten on restart.

    ``environ`` is the process's environment unless given.
    """
    environ = os.environ if environ is None else environ
    settings = state_that_must_persist(config)
    if not settings or ECS_TASK_MARKER not in environ:
        return
    if environ.get(STATE_PERSISTENT_ENV) in PERSISTENT_STATE_KINDS:
        return
    raise ConfigError(
        f"{' and '.join(settings)} need a persistent state folder, and this ECS task has none "
        f"({STATE_PERSISTENT_ENV} is not {'/'.join(sorted(PERSISTENT_STATE_KINDS))}): a restart "
        "would forget the privacy budget spent and the secure-aggregation key; deploy the "
        "hospital stack, whose task mounts its encrypted EFS state volume and sets "
        f"{STATE_PERSISTENT_ENV}=efs"
    )
