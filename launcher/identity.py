"""A rank's identity from its launcher's environment (mpiexec, srun, or dtrain launch)."""
import os

# Checked in order: the MPI launcher's own variables come before Slurm's, because under
# `mpiexec` inside an allocation SLURM_* describe the launcher processes, not the ranks.
_RANK = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
_LOCAL_RANK = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
_LOCAL_SIZE = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
               "SLURM_NTASKS_PER_NODE")


def _first(names, default):
    for n in names:
        value = os.environ.get(n)
        if value not in (None, ""):
            return int(value.split("(")[0].split(",")[0])
    return default


def identity():
    """(rank, world_size, local_rank, local_world_size, node_rank) of this process."""
    rank = _first(_RANK, 0)
    world = _first(_SIZE, 1)
    local_rank = _first(_LOCAL_RANK, 0)
    local_world = _first(_LOCAL_SIZE, world)
    node = os.environ.get("NODE_RANK") or (os.environ.get("SLURM_NODEID")
                                            if "SLURM_PROCID" in os.environ and
                                            "PMI_RANK" not in os.environ else None)
    node_rank = int(node) if node else rank // max(local_world, 1)
    return rank, world, local_rank, local_world, node_rank


def rank_environment():
    """The torchrun-style variables every rank gets (RANK, LOCAL_RANK, ...)."""
    rank, world, local_rank, local_world, node_rank = identity()
    env = {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": local_rank,
           "LOCAL_WORLD_SIZE": local_world, "NODE_RANK": node_rank}
    env = {k: str(v) for k, v in env.items()}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(local_world, 1)))
    return env
