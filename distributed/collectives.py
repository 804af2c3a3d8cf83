"""Collectives and point-to-point ops on tensors, in place, with torch.distributed's names.

Ranks given as `src`/`dst` are global ranks, as in PyTorch. Every call has the group's
timeout; `async_op=True` returns a `Work`. Every collective is checked to be the same call
(collective, op, root, dtypes, shapes) on all ranks of the group, alongside the transfer
(`call_check`); a mismatch raises CollectiveMismatchError on every rank. Point-to-point
transfers are not matched that way; a receive checks the size of what arrived.
`CommCounter` counts the collectives called while it is active (calls and bytes per kind).
"""
import numpy as np

from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.distributed import call_check
from dtrain.distributed.call_check import render as _render
from dtrain.distributed.process_group import resolve
from dtrain.distributed.work import Work, crowded


class ReduceOp:
    """Reduction operators (`dt.distributed.ReduceOp.SUM`, ...)."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"


class CommCounter:
    """Collective calls and payload bytes per kind ("all_reduce", "all_gather",
    "reduce_scatter", "broadcast", ...) made on this rank while active::

        with dt.distributed.CommCounter() as comm:
            loss.backward()
        comm.calls["reduce_scatter"], comm.bytes["reduce_scatter"]

    The payload is the whole (unsharded) buffer: an all-gather's output, a reduce-scatter's
    input, the tensor of an all-reduce, broadcast or reduce."""

    def __init__(self):
        self.calls, self.bytes = {}, {}

    def __enter__(self):
        _counters.append(self)
        return self

    def __exit__(self, *exc):
        _counters.remove(self)

    def volume(self):
        """Bytes moved in the ZeRO paper's unit: an all-reduce counts twice (it is a
        reduce-scatter plus an all-gather), every other collective once."""
        return sum(b * (2 if kind == "all_reduce" else 1) for kind, b in self.bytes.items())


_counters = []  # the active CommCounters
_OPS = {ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX}
_WIDER = {np.dtype(np.float16): np.float32, np.dtype(np.bool_): np.uint8}  # no MPI type/op


# -- buffers ----------------------------------------------------------------------------------
class _Buffer:
    """A contiguous array for a tensor (the tensor's own when possible) plus the step that
    writes results back and bumps the version counter."""

    def __init__(self, tensor, what, writes=True):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{what}: expected a dtrain Tensor, got {type(tensor).__name__}")
        self.tensor = tensor
        data = tensor._data
        self.array = data if data.flags.c_contiguous else backend.array_module(data) \
            .ascontiguousarray(data)
        self.writes = writes

    def done(self):
        if self.writes:
            if self.array is not self.tensor._data:
                self.tensor._data[...] = self.array
            self.tensor._version[0] += 1


def _reducible(arr, op, what):
    """The array that MPI/NCCL reduce (upcast where they have no type or op), the transport's
    op, and a function turning the reduced array back into `arr`'s dtype in place (None when
    there is nothing to do)."""
    if op not in _OPS:
        raise ValueError(f"{what}: unknown reduce op {op!r}; use dt.distributed.ReduceOp")
    kind = arr.dtype
    if op == ReduceOp.AVG and kind.kind != "f":
        raise TypeError(f"{what}: ReduceOp.AVG needs a floating point tensor, got {kind}")
    wider = _WIDER.get(kind)
    if wider is None and op != ReduceOp.AVG:
        return arr, op, None
    work = arr if wider is None else arr.astype(wider)

    def back(size):
        if op == ReduceOp.AVG:
            work[...] /= size
        if work is not arr:
            arr[...] = work != 0 if kind == np.bool_ else work
    return work, ("sum" if op == ReduceOp.AVG else op), back


def _launch(group, name, start, finish, async_op, *fields, blocking=None, payload=0):
    """Number the call and post its check, start it, and wait (or hand back the Work).
    `fields` describe the call for the check: strings ("op=sum") and arrays (dtype, shape);
    `payload` is the bytes that `CommCounter` counts.

    A synchronous call with a `blocking` form waits for its check first, then transfers
    with that: once the check passed, every rank is inside this same call, so the transfer
    needs no timeout of its own and a mismatched one never starts. Not when ranks outnumber
    cores: MPI's blocking calls busy-poll, `Work.wait` yields the CPU."""
    for counter in _counters:
        counter.calls[name] = counter.calls.get(name, 0) + 1
        counter.bytes[name] = counter.bytes.get(name, 0) + payload
    if blocking is not None and not async_op and not crowded():
        _agree(group, name, *fields)
        blocking()
        finish()
        return None
    check = call_check.begin(group, name, fields)
    work = Work(group, name, group.seq, start(), finish, check)
    if async_op:
        return work
    work.wait()
    return None


def _agree(group, name, *fields):
    """Check a call on all ranks before a transfer that cannot run alongside its check."""
    check = call_check.begin(group, name, fields)
    if check is not None:
        check.wait()


def _member(group):
    g = resolve(group)
    return g if g.is_member else None


# -- collectives ------------------------------------------------------------------------------
def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce `tensor` over all ranks; every rank ends with the result (in place)."""
    g = _member(group)
    if g is None:
        return None
    buf = _Buffer(tensor, "all_reduce")
    work, mpi_op, back = _reducible(buf.array, op, "all_reduce")

    def finish():
        if back is not None:
            back(g.size())
        buf.done()
    comm = g.comm_for(work)
    blocking = comm.Allreduce and (lambda: comm.Allreduce(work, mpi_op))
    return _launch(g, "all_reduce", lambda: comm.Iallreduce(work, mpi_op), finish, async_op,
                   "op=" + op, tensor._data, blocking=blocking,
                   payload=buf.array.nbytes)


def reduce(tensor, dst, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce onto global rank `dst` (in place there; other ranks' tensors unchanged)."""
    g = _member(group)
    if g is None:
        return None
    root = g.group_rank(dst, "reduce")
    buf = _Buffer(tensor, "reduce", writes=g.rank() == root)
    work, mpi_op, back = _reducible(buf.array, op, "reduce")
    if g.rank() != root and work is buf.array:
        work = work.copy()  # MPI reads it; keep the caller's tensor untouched

    def finish():
        if back is not None and g.rank() == root:
            back(g.size())
        buf.done()
    return _launch(g, "reduce", lambda: g.comm_for(work).Ireduce(work, root, mpi_op), finish,
                   async_op, "op=" + op, f"dst={dst}", tensor._data,
                   payload=buf.array.nbytes)


def broadcast(tensor, src, group=None, async_op=False):
    """Copy global rank `src`'s tensor into every rank's tensor."""
    g = _member(group)
    if g is None:
        return None
    root = g.group_rank(src, "broadcast")
    buf = _Buffer(tensor, "broadcast", writes=g.rank() != root)
    arr = _raw(buf.array)
    return _launch(g, "broadcast", lambda: g.comm_for(arr).Ibcast(arr, root), buf.done,
                   async_op, f"src={src}", tensor._data, payload=arr.nbytes)


def _raw(arr):
    """A view the transports can move byte for byte (float16 has no MPI type)."""
    return arr.view(np.uint16) if arr.dtype == np.float16 else arr


def _check_like(what, out, inp, rows):
    xp_dtype = inp._data.dtype
    if out._data.dtype != xp_dtype:
        raise TypeError(f"{what}: output dtype {out.dtype} differs from input dtype {inp.dtype}")
    if out._data.size != inp._data.size * rows:
        raise ValueError(f"{what}: output has {out._data.size} elements; expected "
                         f"{rows} x {inp._data.size} (input shape {list(inp._data.shape)})")


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """Concatenate every rank's `input_tensor` into `output_tensor` (rank order)."""
    g = _member(group)
    if g is None:
        return None
    _check_like("all_gather_into_tensor", output_tensor, input_tensor, g.size())
    out = _Buffer(output_tensor, "all_gather_into_tensor")
    inp = _Buffer(input_tensor, "all_gather_into_tensor", writes=False)
    send, recv = _raw(inp.array), _raw(out.array)
    return _launch(g, "all_gather", lambda: g.comm_for(send).Iallgather(send, recv), out.done,
                   async_op, input_tensor._data, payload=recv.nbytes)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill `tensor_list[i]` with rank i's `tensor`."""
    g = _member(group)
    if g is None:
        return None
    if len(tensor_list) != g.size():
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors; the group "
                         f"has {g.size()} ranks")
    for t in tensor_list:
        if t._data.shape != tensor._data.shape or t._data.dtype != tensor._data.dtype:
            raise ValueError(f"all_gather: every output must be {tensor.dtype}"
                             f"{list(tensor._data.shape)}, got {t.dtype}{list(t._data.shape)}")
    xp = backend.array_module(tensor._data)
    flat = Tensor._make(xp.empty((g.size(),) + tensor._data.shape, dtype=tensor._data.dtype))

    def scatter_out():
        for i, t in enumerate(tensor_list):
            t._data[...] = flat._data[i]
            t._version[0] += 1
    work = all_gather_into_tensor(flat, tensor, group, async_op=True)
    work._finish = _chain(work._finish, scatter_out)
    if async_op:
        return work
    work.wait()
    return None


def _chain(first, second):
    def both():
        if first is not None:
            first()
        second()
    return both


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce `input` over ranks and give rank i the i-th slice of the result."""
    g = _member(group)
    if g is None:
        return None
    _check_like("reduce_scatter_tensor", input, output, g.size())
    out = _Buffer(output, "reduce_scatter_tensor")
    inp = _Buffer(input, "reduce_scatter_tensor", writes=False)
    send, mpi_op, _ = _reducible(inp.array, op, "reduce_scatter_tensor")
    recv, _, back = _reducible(out.array, op, "reduce_scatter_tensor")

    def finish():
        if back is not None:
            back(g.size())
        out.done()
    return _launch(g, "reduce_scatter",
                   lambda: g.comm_for(send).Ireduce_scatter(send, recv, mpi_op), finish,
                   async_op, "op=" + op, input._data, payload=inp.array.nbytes)


def _uneven(what, group, output, input, counts, gathers):
    """(group, output buffer, input buffer) of a collective over parts of `counts` elements,
    one per rank (the flat side holds them all: `output` where it `gathers`, else `input`);
    None off the group."""
    g = _member(group)
    if g is None:
        return None
    flat, part = (output, input) if gathers else (input, output)
    if len(counts) != g.size() or any(c < 0 for c in counts):
        raise ValueError(f"{what}: counts {list(counts)} must give {g.size()} element counts, "
                         "one per rank of the group")
    if flat._data.size != sum(counts) or part._data.size != counts[g.rank()]:
        raise ValueError(f"{what}: counts {list(counts)} need a flat tensor of {sum(counts)} "
                         f"elements and {counts[g.rank()]} on rank {g.rank()}; got "
                         f"{flat._data.size} and {part._data.size}")
    if flat._data.dtype != part._data.dtype:
        raise TypeError(f"{what}: dtypes differ: {flat.dtype} and {part.dtype}")
    return g, _Buffer(output, what), _Buffer(input, what, writes=False)


def reduce_scatter_v(output, input, counts, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce the flat `input` (sum(counts) elements) over ranks and give rank i the counts[i]
    elements after the first sum(counts[:i]) in `output`. dtrain's: uneven parts (MPI's
    Reduce_scatter), which `reduce_scatter_tensor` does not allow."""
    found = _uneven("reduce_scatter_v", group, output, input, counts, gathers=False)
    if found is None:
        return None
    g, out, inp = found
    send, mpi_op, _ = _reducible(inp.array.reshape(-1), op, "reduce_scatter_v")
    recv, _, back = _reducible(out.array.reshape(-1), op, "reduce_scatter_v")

    def finish():
        if back is not None:
            back(g.size())
        out.done()
    return _launch(g, "reduce_scatter",
                   lambda: g.comm_for(send).Ireduce_scatter_v(send, recv, counts, mpi_op),
                   finish, async_op, "op=" + op, f"counts={list(counts)}", input._data,
                   payload=inp.array.nbytes)


def all_gather_v(output, input, counts, group=None, async_op=False):
    """Concatenate every rank's `input` (counts[i] elements on rank i) into the flat `output`
    (rank order). dtrain's: uneven parts (MPI's Allgatherv)."""
    found = _uneven("all_gather_v", group, output, input, counts, gathers=True)
    if found is None:
        return None
    g, out, inp = found
    send, recv = _raw(inp.array.reshape(-1)), _raw(out.array.reshape(-1))
    return _launch(g, "all_gather",
                   lambda: g.comm_for(send).Iallgatherv(send, recv, counts), out.done,
                   async_op, f"counts={list(counts)}", output._data, payload=recv.nbytes)


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False):
    """Collect every rank's tensor into `gather_list` on global rank `dst`."""
    g = _member(group)
    if g is None:
        return None
    root = g.group_rank(dst, "gather")
    xp = backend.array_module(tensor._data)
    inp = _Buffer(tensor, "gather", writes=False)
    recv = None
    if g.rank() == root:
        if gather_list is None or len(gather_list) != g.size():
            raise ValueError(f"gather: the destination rank needs gather_list with "
                             f"{g.size()} tensors")
        recv = xp.empty((g.size(),) + tensor._data.shape, dtype=tensor._data.dtype)

    def finish():
        if recv is not None:
            for i, t in enumerate(gather_list):
                t._data[...] = recv[i]
                t._version[0] += 1
    send = _raw(inp.array)
    return _launch(g, "gather",
                   lambda: g.comm_for(send).Igather(send, None if recv is None else _raw(recv),
                                                    root),
                   finish, async_op, f"dst={dst}", tensor._data,
                   payload=send.nbytes * g.size())


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False):
    """Give rank i the i-th tensor of `scatter_list` from global rank `src`."""
    g = _member(group)
    if g is None:
        return None
    root = g.group_rank(src, "scatter")
    xp = backend.array_module(tensor._data)
    send = None
    if g.rank() == root:
        if scatter_list is None or len(scatter_list) != g.size():
            raise ValueError(f"scatter: the source rank needs scatter_list with "
                             f"{g.size()} tensors")
        send = _raw(xp.ascontiguousarray(xp.stack([t._data for t in scatter_list])))
    out = _Buffer(tensor, "scatter")
    recv = _raw(out.array)
    return _launch(g, "scatter", lambda: g.comm_for(recv).Iscatter(send, recv, root), out.done,
                   async_op, f"src={src}", tensor._data, payload=recv.nbytes * g.size())


def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None,
                      group=None, async_op=False):
    """Split `input` along dim 0 and send piece i to rank i; receive into `output`."""
    g = _member(group)
    if g is None:
        return None
    n = g.size()
    row_in = int(np.prod(input._data.shape[1:]))
    row_out = int(np.prod(output._data.shape[1:]))
    in_sizes = input_split_sizes or [input._data.shape[0] // n] * n
    out_sizes = output_split_sizes or [output._data.shape[0] // n] * n
    if sum(in_sizes) != input._data.shape[0] or sum(out_sizes) != output._data.shape[0]:
        raise ValueError(f"all_to_all_single: split sizes {in_sizes} / {out_sizes} do not add "
                         f"up to the input/output first dims {input._data.shape[0]} / "
                         f"{output._data.shape[0]}")
    inp = _Buffer(input, "all_to_all_single", writes=False)
    out = _Buffer(output, "all_to_all_single")
    send, recv = _raw(inp.array), _raw(out.array)
    return _launch(g, "all_to_all",
                   lambda: g.comm_for(send).Ialltoallv(send, [s * row_in for s in in_sizes],
                                                       recv, [s * row_out for s in out_sizes]),
                   out.done, async_op, _rows(input._data), payload=send.nbytes)


def _rows(arr):
    """"dtype[*, d1, ...]": the check's view of an all_to_all input, whose first dimension
    may differ between ranks."""
    return f"{arr.dtype.name}[{', '.join(['*'] + [str(d) for d in arr.shape[1:]])}]"


def barrier(group=None, async_op=False, device_ids=None):
    g = _member(group)
    if g is None:
        return None
    return _launch(g, "barrier", lambda: g.comm_for(np.empty(0)).Ibarrier(), None, async_op)


# -- point to point ---------------------------------------------------------------------------
def isend(tensor, dst, group=None, tag=0):
    g = resolve(group)
    inp = _Buffer(tensor, "isend", writes=False)
    arr = _raw(inp.array)
    peer = g.group_rank(dst, "isend")
    return Work(g, f"send->{dst}", None, g.comm_for(arr).Isend(arr, peer, tag))


def irecv(tensor, src=None, group=None, tag=0):
    """Receive into `tensor`; the message must fill it exactly (MPI reports its size)."""
    g = resolve(group)
    out = _Buffer(tensor, "irecv")
    arr = _raw(out.array)
    peer = None if src is None else g.group_rank(src, "irecv")
    pending = g.comm_for(arr).Irecv(arr, peer, tag)

    def finish():
        if pending.received not in (None, arr.nbytes):
            raise RuntimeError(f"recv: the message from rank {g.ranks[pending.source]} has "
                               f"{pending.received} bytes but the tensor "
                               f"{_render(tensor._data)} has {arr.nbytes}; send and recv must "
                               "use tensors of the same dtype and shape")
        out.done()
    return Work(g, f"recv<-{src}", None, pending, finish)


def send(tensor, dst, group=None, tag=0):
    isend(tensor, dst, group, tag).wait()


def recv(tensor, src=None, group=None, tag=0):
    """Receive into `tensor`; returns the sender's global rank."""
    g = resolve(group)
    work = irecv(tensor, src, group, tag)
    work.wait()
    return g.ranks[work.source]


# -- Python objects (pickled, as torch does; for small metadata, never for checkpoints) ------
# NOTE: mpi4py's pickling collectives block, so their call check passes before they start.
def broadcast_object_list(object_list, src=0, group=None, device=None):
    """Replace every rank's `object_list` by global rank `src`'s (lists of equal length)."""
    g = _member(group)
    if g is None:
        return
    root = g.group_rank(src, "broadcast_object_list")
    _agree(g, "broadcast_object_list", f"src={src}", f"{len(object_list)} objects")
    values = g.mpi_comm.bcast(list(object_list) if g.rank() == root else None, root=root)
    object_list[:] = values


def all_gather_object(object_list, obj, group=None):
    """Fill `object_list[i]` with rank i's picklable `obj`."""
    g = _member(group)
    if g is None:
        return
    if len(object_list) != g.size():
        raise ValueError(f"all_gather_object: object_list must have {g.size()} entries")
    _agree(g, "all_gather_object")
    object_list[:] = g.mpi_comm.allgather(obj)
