"""Process groups: the default (world) group made by `init_process_group`, and subgroups.

MPI is the control plane: ranks are started by an MPI launcher (mpiexec, srun) and find
each other through it. Each group owns an MPI communicator for CPU arrays, a NCCL one for
CUDA arrays when NCCL is in use, and a duplicate "control" communicator for the call checks
(`call_check`) and the watchdog (so they never interfere with user traffic).
"""
import os
import sys
import traceback
from collections import deque
from datetime import timedelta

import numpy as np

from dtrain.core import backend as array_backend
from dtrain.distributed.call_check import rank_list
from dtrain.distributed.comm import launched_by_mpi, make_communicator
from dtrain.distributed.work import _seconds, abort_job, allowed_cpus, share_cores

DEFAULT_TIMEOUT = timedelta(minutes=30)


class ProcessGroup:
    """A set of global ranks with its communicators (`None` comms where not a member)."""

    def __init__(self, mpi_comm, ranks, backend, timeout, control_comm, global_rank):
        self.ranks = tuple(ranks)
        self.mpi_comm = mpi_comm
        self.requested_backend = backend
        self.timeout = timeout
        self.control_comm = control_comm
        self.global_rank = global_rank
        self.seq = 0                # collective calls made on this group
        self.unverified = deque()   # their posted call checks not yet seen to pass
        self.check_slots = []       # (buffer, persistent request) pairs, see call_check
        self.broken = None          # the mismatch that made the group unusable
        # DTRAIN_DISTRIBUTED_DEBUG=1: call checks compare the call sites too
        self.debug = os.environ.get("DTRAIN_DISTRIBUTED_DEBUG", "0") not in ("", "0")
        self._comms = {}

    @property
    def is_member(self):
        return self.mpi_comm is not None

    @property
    def is_world(self):
        return self is state.world

    def rank(self):
        return self.ranks.index(self.global_rank) if self.is_member else -1

    def size(self):
        return len(self.ranks)

    def group_rank(self, global_rank, what):
        if global_rank not in self.ranks:
            raise ValueError(f"{what}: global rank {global_rank} is not part of the group "
                             f"{list(self.ranks)}")
        return self.ranks.index(global_rank)

    def backend_for(self, arr):
        """"nccl" for CUDA arrays when NCCL is in use, else "mpi"."""
        if array_backend.is_cuda_array(arr) and self.requested_backend in (None, "nccl") \
                and nccl_available():
            return "nccl"
        return "mpi"

    def comm_for(self, arr):
        name = "mpi" if type(arr) is np.ndarray else self.backend_for(arr)
        comm = self._comms.get(name)
        if comm is None:
            comm = self._comms[name] = make_communicator(name, self.mpi_comm)
        return comm

    def backend_name(self):
        if self.requested_backend is not None:
            return self.requested_backend
        return "nccl" if array_backend.cuda_is_available() and nccl_available() else "mpi"

    def abort_transfers(self):
        """After a mismatched call: abort the communicators whose transfers may be stuck."""
        for comm in self._comms.values():
            comm.abort()

    def free(self):
        in_flight = {id(c.request) for c in self.unverified}
        for _, request in self.check_slots:
            if id(request) not in in_flight:  # an active collective request cannot be freed
                request.Free()
        self.check_slots = []
        for c in (self.mpi_comm, self.control_comm):
            if c is not None:
                c.Free()
        self.mpi_comm = self.control_comm = None


def nccl_available():
    if not array_backend.cuda_is_available():
        return False
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", False))


class _State:
    world = None
    local_rank = 0
    local_size = 1


state = _State()


def _not_launched_message():
    return ("init_process_group: this process was not started by an MPI launcher, so there "
            "are no other ranks to find. Start the ranks with `dtrain launch --nproc-per-node "
            "N script.py`, or `mpiexec -n N python script.py` (use -n 1 for a single rank).")


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                       store=None, group_name="", pg_options=None, device_id=None):
    """Join the job's ranks into the default group (backend None, "mpi", "nccl" or "gloo").

    "gloo", PyTorch's CPU backend, runs on the MPI backend; `get_backend()` then answers
    "gloo", the name the script asked for, as PyTorch does."""
    if state.world is not None:
        raise RuntimeError("trying to initialize the default process group twice! Call "
                           "dt.distributed.destroy_process_group() first, or check "
                           "dt.distributed.is_initialized() before initializing.")
    if backend not in (None, "mpi", "nccl", "gloo"):
        raise ValueError(f"Invalid backend: '{backend}'; dtrain supports None (auto), 'mpi', "
                         "'nccl' and 'gloo' (runs on MPI)")
    if backend == "nccl" and not nccl_available():
        raise RuntimeError("backend 'nccl' was requested but NCCL is not available (needs a "
                           "CUDA GPU, CuPy and NCCL: pip install dtrain[cuda] "
                           "nvidia-nccl-cu12); use backend='gloo', 'mpi' or None")
    if not launched_by_mpi():
        raise RuntimeError(_not_launched_message())
    from mpi4py import MPI

    world = MPI.COMM_WORLD.Dup()
    _check_identity_environment(world)
    if world_size not in (-1, world.Get_size()) or rank not in (-1, world.Get_rank()):
        raise ValueError(f"init_process_group: world_size={world_size}, rank={rank} disagree "
                         f"with the MPI launcher's {world.Get_size()} ranks (this is rank "
                         f"{world.Get_rank()}); leave them unset")
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    state.local_rank, state.local_size = local.Get_rank(), local.Get_size()
    masks = local.allgather(sorted(allowed_cpus()))
    local.Free()
    share_cores(state.local_size, len(set().union(*map(set, masks))))
    seconds = _seconds(timeout if timeout is not None else _env_timeout())
    state.world = ProcessGroup(world, range(world.Get_size()), backend, seconds, world.Dup(),
                               world.Get_rank())
    # torchrun's variables, for code below this layer (e.g. DistributedSampler's defaults)
    for key, value in (("RANK", world.Get_rank()), ("WORLD_SIZE", world.Get_size()),
                       ("LOCAL_RANK", state.local_rank),
                       ("LOCAL_WORLD_SIZE", state.local_size)):
        os.environ.setdefault(key, str(value))
    _install_abort_on_crash()


def _check_identity_environment(world):
    """RANK/WORLD_SIZE already in the environment (left over from an old torchrun session or
    a Kubeflow shell) must match MPI's; if they do not on some rank, every rank fails."""
    rank, size = world.Get_rank(), world.Get_size()
    given = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    expected = {"RANK": rank, "WORLD_SIZE": size}
    wrong = any(not v.strip().isdigit() or int(v) != expected[k] for k, v in given.items())
    bad = [r for r, w in enumerate(world.allgather(wrong)) if w]
    if not bad:
        return
    world.Free()
    if wrong:
        shown = " ".join(f"{k}={v}" for k, v in given.items())
        verb, them = ("disagree", "them") if len(given) > 1 else ("disagrees", "it")
        raise RuntimeError(f"init_process_group: {shown} from the environment {verb} with MPI "
                           f"(rank {rank} of {size}): unset {them} or start with dtrain launch")
    raise RuntimeError(f"init_process_group: RANK/WORLD_SIZE from the environment disagree "
                       f"with MPI on {rank_list(bad)} (see the error there): unset them or "
                       "start with dtrain launch")


def _env_timeout():
    value = os.environ.get("DTRAIN_DISTRIBUTED_TIMEOUT_S")
    return float(value) if value else DEFAULT_TIMEOUT


def _install_abort_on_crash():
    """An uncaught exception on one rank ends the whole job with its traceback."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        world = state.world
        if world is None or world.size() == 1:
            return previous(kind, value, tb)
        text = "".join(traceback.format_exception(kind, value, tb))
        abort_job(f"[rank {world.global_rank}] uncaught exception, aborting the job:\n{text}")
    sys.excepthook = hook


def destroy_process_group(group=None):
    """Free a group's communicators; without `group`, leave distributed mode entirely."""
    if group is not None and group is not state.world:
        group.free()
        return
    world = _require_world()
    world.free()
    state.world = None
    share_cores(0, 0)


def _require_world():
    if state.world is None:
        raise RuntimeError("Default process group has not been initialized, please make sure "
                           "to call dt.distributed.init_process_group() (under `dtrain launch` "
                           "or mpiexec) first.")
    return state.world


def resolve(group):
    """The group an API call means (`None` is the default group)."""
    return _require_world() if group is None else group


def is_initialized():
    return state.world is not None


def is_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def get_rank(group=None):
    return resolve(group).rank()


def get_world_size(group=None):
    g = resolve(group)
    return g.size() if g.is_member else -1


def get_local_rank():
    """This rank's index among the ranks on the same node."""
    _require_world()
    return state.local_rank


def get_local_world_size():
    _require_world()
    return state.local_size


def get_backend(group=None):
    return resolve(group).backend_name()


def new_group(ranks=None, timeout=None, backend=None):
    """A subgroup of the given global ranks; every rank of the job must call it."""
    world = _require_world()
    ranks = sorted(set(range(world.size()) if ranks is None else ranks))
    bad = [r for r in ranks if not 0 <= r < world.size()]
    if bad:
        raise ValueError(f"new_group: ranks {bad} are outside the world of {world.size()}")
    comm = world.mpi_comm.Create(world.mpi_comm.Get_group().Incl(ranks))
    from mpi4py import MPI

    member = comm != MPI.COMM_NULL
    return ProcessGroup(comm if member else None, ranks, backend or world.requested_backend,
                        world.timeout if timeout is None else _seconds(timeout),
                        comm.Dup() if member else None, world.global_rank)
