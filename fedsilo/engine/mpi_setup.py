"""Is MPI here: the process manager's environment, mpirun and mpi4py.

Shared by the launcher (``mpi_launch``, outside mpirun) and the ranks (``mpi_engine``) so
neither imports the other. Free of mpi4py: importing it initialises MPI, which only the ranks
themselves should do.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from fl_core.errors import ConfigError

RANK_ENVIRONMENT = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")
"""Set by Open MPI's mpirun, by MPICH's hydra and by Slurm's srun in every rank."""
_INSTALL_HINT = (
    "install Open MPI and mpi4py with make install (apt-get install openmpi-bin "
    "libopenmpi-dev; pip install -r requirements-dev.lock), or use --engine process"
)


def inside_mpirun() -> bool:
    """True when a process manager (mpirun, mpiexec, srun) started this process."""
    return any(name in os.environ for name in RANK_ENVIRONMENT)


def require_mpi() -> str:
    """The mpirun executable; exit 2 with how to install when Open MPI or mpi4py is missing."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise ConfigError(f"--engine mpi: mpirun not found on PATH; {_INSTALL_HINT}")
    if importlib.util.find_spec("mpi4py") is None:
        raise ConfigError(f"--engine mpi: the mpi4py package is not installed; {_INSTALL_HINT}")
    return mpirun
