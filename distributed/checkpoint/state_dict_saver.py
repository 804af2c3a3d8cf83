"""`dcp.save` / `dcp.async_save`: every rank writes the pieces it is assigned to its own
file in parallel (nothing is gathered to rank 0), then rank 0 writes the metadata last.

A save (1) agrees on a plan: every rank's pieces are all-gathered and each piece is given
to one of its holders (planner.assign_writers); (2) stages the host arrays to write (copies
for `async_save`); (3) writes this rank's file, durable (fsync'ed) when its write returns;
(4) gathers the files' records on rank 0, which writes `.metadata` atomically: only then is
the checkpoint complete; (5) a barrier. File names carry a token new to each save, so a save
into the folder of an earlier checkpoint never touches that checkpoint's files: interrupted,
it leaves the earlier one complete; committed, rank 0 deletes the files it replaced.
Steps 3-5 run on a background thread for `async_save`, over a duplicate of the group's
communicator (MPI runs multi-threaded), so they never interleave with training's collectives.
"""
import glob
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dtrain.core import backend
from dtrain.distributed.checkpoint import metadata, planner, storage
from dtrain.distributed.process_group import is_initialized, resolve

_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcp-async-save")
_pending = None  # the Future of the last save
_comms = {}  # id(group) -> (group, the checkpoint's duplicate of its communicator)


class _Solo:
    """The communicator of a process without a process group."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def allgather(self, obj):
        return [obj]

    def gather(self, obj, root=0):
        return [obj]

    def Barrier(self):
        pass


def group_comm(process_group):
    """The communicator checkpoints use for `process_group` (None: the default group, or
    this process alone when none is initialized); made on first use, by every rank."""
    if process_group is None and not is_initialized():
        return _Solo()
    group = resolve(process_group)
    if id(group) not in _comms:
        _comms[id(group)] = (group, group.mpi_comm.Dup())
    return _comms[id(group)][1]


def wait_for_pending():
    """Wait for the previous `async_save` (raising its error, if it failed)."""
    global _pending
    if _pending is not None:
        pending, _pending = _pending, None
        pending.result()


def save(state_dict, *, checkpoint_id, process_group=None):
    """Save `state_dict` (nested dicts and lists of Tensors, `ShardedTensor`s and plain
    values) to the folder `checkpoint_id`; every rank of the group calls it."""
    wait_for_pending()
    _stage(state_dict, checkpoint_id, process_group, copy=False)()


def async_save(state_dict, *, checkpoint_id, process_group=None):
    """`save`, with the writing done by a background thread once the arrays are copied;
    returns a Future (`.result()` waits for the checkpoint to be complete, `.done()`). The
    next save (or load) waits for this one; keep the state dict's tensors alive meanwhile
    or not: the staged copies are written."""
    global _pending
    wait_for_pending()
    if is_initialized():
        from mpi4py import MPI
        if MPI.Query_thread() != MPI.THREAD_MULTIPLE:
            raise RuntimeError("dcp.async_save writes from a background thread, which needs "
                               "MPI initialized with MPI_THREAD_MULTIPLE (mpi4py's default "
                               "rc.thread_level); use dcp.save")
    _pending = _writer.submit(_stage(state_dict, checkpoint_id, process_group, copy=True))
    return _pending


def _stage(state_dict, checkpoint_id, process_group, copy):
    """Plan the save (collective) and stage this rank's arrays; returns the writing job."""
    directory = os.fspath(checkpoint_id)
    comm = group_comm(process_group)
    rank = comm.Get_rank()
    tensors, values = planner.flatten(state_dict)
    plan = [(path, leaf.offsets, leaf.shape, leaf.tensor._data.nbytes)
            for path, leaf in tensors.items()]
    info = {path: (leaf.global_shape, leaf.dtype.name) for path, leaf in tensors.items()}
    token = secrets.token_hex(4) if rank == 0 else None
    everyone = comm.allgather((plan, info, {p: v for p, (_, _, v) in values.items()}, token))
    token = everyone[0][3]
    shapes = {}
    for part in everyone:
        for path, described in part[1].items():
            if shapes.setdefault(path, described) != described:
                raise ValueError(f"dcp.save: ranks disagree on tensor {path}: global shape "
                                 f"and dtype {shapes[path]} on one, {described} on another")
    writer = planner.assign_writers([part[0] for part in everyone])
    pieces = {}
    for path, leaf in tensors.items():
        if writer.get((path, leaf.offsets, leaf.shape)) == rank:
            host = backend.to_device(leaf.tensor._data, backend.CPU)
            pieces[storage.piece_name(path, leaf.offsets)] = \
                np.array(host) if copy and host is leaf.tensor._data else host
    merged = {}
    for part in reversed(everyone):  # rank 0's values win
        merged.update(part[2])

    def write():
        os.makedirs(directory, exist_ok=True)
        name = f"__{rank}_{token}.distcp"
        record = storage.write_file(directory, name, pieces) if pieces else None
        records = comm.gather((name, record), root=0)
        if rank == 0:
            _commit(directory, records, writer, shapes, merged, comm.Get_size())
        comm.Barrier()
    return write


def _commit(directory, records, writer, shapes, values, world_size):
    """Rank 0: write `.metadata` from every rank's file records, then delete the files of
    earlier saves into this folder (and temporary files that interrupted writes left)."""
    files, where = {}, {}
    for rank, (name, record) in enumerate(records):
        if record is not None:
            files[name] = {**record[0], "rank": rank}
            where.update({key: (name, at) for key, at in record[1].items()})
    tensors = {path: {"shape": list(shape), "dtype": dtype, "chunks": []}
               for path, (shape, dtype) in shapes.items()}
    for (path, offsets, shape) in writer:
        name, stored = where[storage.piece_name(path, offsets)]
        tensors[path]["chunks"].append({"offsets": list(offsets), "shape": list(shape),
                                        "file": name, **stored})
    metadata.write(directory, {"world_size": world_size, "files": files, "tensors": tensors,
                               "values": values})
    for stale in glob.glob(os.path.join(directory, "__*.distcp")) + \
            glob.glob(os.path.join(directory, ".__*.distcp.*.tmp")):
        if os.path.basename(stale) not in files:
            os.unlink(stale)

