"""A rank's identity, read from the variables its MPI launcher (mpiexec or srun) sets for it.

Never from RANK, WORLD_SIZE, ...: left in a shell by torchrun or a Kubeflow PyTorchJob, they
describe another job, and trusting them turned a 2-rank launch into two 1-rank trainings. The
rank supervisor sets them from these (`rank_environment`); `dtrain launch` drops the
inherited ones (`stale_variables`) before it starts mpiexec.
"""
import os
import socket

# Checked in order: the MPI launcher's own variables (hydra: PMI_* and MPI_LOCAL*, Open MPI:
# OMPI_*) come before Slurm's, because under `mpiexec` inside an allocation SLURM_* describe
# the launcher's proxies, not the ranks.
_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
_LOCAL_RANK = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
_LOCAL_SIZE = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
_MPIEXEC_MARKERS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_RANK")
# Set by `dtrain launch` when it emulates several nodes on one machine (launcher/elastic.py):
# the emulated node names, comma-separated; node k holds the k-th block of ranks.
EMULATED_NODES = "DTRAIN_EMULATED_NODES"

# What torchrun (and launchers that imitate it) export to each worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK",
                      "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE",
                      "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def _first(names, default):
    for n in names:
        value = os.environ.get(n)
        if value not in (None, ""):
            return int(value.split("(")[0].split(",")[0])  # Slurm writes e.g. "2(x3)"
    return default


def identity():
    """(rank, world_size, local_rank, local_world_size, node_rank) of this process."""
    rank = _first(_RANK, 0)
    world = _first(_SIZE, 1)
    local_rank = _first(_LOCAL_RANK, 0)
    local_world = _first(_LOCAL_SIZE, world)
    srun_started = "SLURM_NODEID" in os.environ and not any(
        m in os.environ for m in _MPIEXEC_MARKERS)
    # mpiexec places the ranks in blocks of local_world per node (-ppn)
    node_rank = int(os.environ["SLURM_NODEID"]) if srun_started else rank // max(local_world, 1)
    emulated = os.environ.get(EMULATED_NODES)
    if emulated:  # LOCAL_RANK stays the host's: it picks the device
        node_rank = rank * len(emulated.split(",")) // world
    return rank, world, local_rank, local_world, node_rank


def node_name():
    """This node's name as the launcher reports it: the emulated node's, Slurm's node name,
    else the host name."""
    emulated = os.environ.get(EMULATED_NODES)
    if emulated:
        return emulated.split(",")[identity()[4]]
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def rank_environment():
    """The torchrun-style variables every rank gets (RANK, LOCAL_RANK, ...)."""
    rank, world, local_rank, local_world, node_rank = identity()
    env = {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": local_rank,
           "LOCAL_WORLD_SIZE": local_world, "NODE_RANK": node_rank}
    env = {k: str(v) for k, v in env.items()}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(local_world, 1)))
    return env


def stale_variables(environ):
    """The names in `environ` that torchrun-style launchers set (TORCHELASTIC_* included)."""
    return sorted(k for k in environ
                  if k in TORCHRUN_VARIABLES or k.startswith("TORCHELASTIC_"))
