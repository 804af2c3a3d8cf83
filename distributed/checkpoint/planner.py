"""What a distributed checkpoint holds and who writes or reads which piece of it.

A state dict is flattened to dotted paths ("model.fc.weight", "optim.state.fc.weight.exp_avg").
Its leaves are: `ShardedTensor`s (this rank's rows of a bigger tensor, as `fully_shard` keeps
them), plain Tensors (a whole tensor, which other ranks may hold too: DDP's replicas, ZeRO-1's
state of the parameters this rank owns) and other values (step counts, hyperparameters, and
whole dicts and lists that hold no tensor, such as a scheduler's state or a config), which go
into the metadata as they are. Pieces are boxes (offsets, shape) in the global tensor.
"""
from dataclasses import dataclass

from dtrain.core.tensor import Tensor


@dataclass
class ShardedTensor:
    """This rank's piece `local` of a tensor of `global_shape`, starting at `offsets` (what
    PyTorch's DTensor is to its DCP); `dcp.load` fills `local` in place."""

    local: Tensor
    global_shape: tuple
    offsets: tuple


@dataclass
class Leaf:
    """A flattened tensor leaf: its global shape and dtype, and this rank's box of it."""

    tensor: Tensor
    global_shape: tuple
    offsets: tuple

    @property
    def shape(self):
        """This rank's box's shape."""
        return tuple(self.tensor.shape)

    @property
    def dtype(self):
        """The NumPy dtype of the local array."""
        return self.tensor._data.dtype


def flatten(state_dict):
    """({path: Leaf}, {path: (container, key, value)}) of the nested dicts and lists of
    `state_dict` that hold tensors (a dict or list holding none, a tuple and every other
    non-tensor are values, kept whole)."""
    tensors, values = {}, {}

    def walk(container, key, value, path):
        if isinstance(value, ShardedTensor):
            tensors[path] = Leaf(value.local, tuple(value.global_shape), tuple(value.offsets))
        elif isinstance(value, Tensor):
            tensors[path] = Leaf(value, tuple(value.shape), (0,) * value.dim())
        elif not _holds_tensor(value) and container is not None:
            values[path] = (container, key, value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(value, k, v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(value, i, v, f"{path}.{i}" if path else str(i))
        else:
            values[path] = (container, key, value)

    if not isinstance(state_dict, dict):
        raise TypeError(f"dcp: state_dict must be a dict, got {type(state_dict).__name__}")
    walk(None, None, state_dict, "")
    return tensors, values


def _holds_tensor(value):
    if isinstance(value, (Tensor, ShardedTensor)):
        return True
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return isinstance(value, list) and any(_holds_tensor(v) for v in value)


def assign_writers(plans):
    """{(path, offsets, shape): writing rank} for every non-empty piece held by any rank of
    `plans` (rank i's list of (path, offsets, shape, nbytes)): each piece is written once,
    by the holder with the fewest bytes to write so far (largest pieces placed first), so
    replicated tensors are spread over the ranks."""
    holders = {}
    for rank, plan in enumerate(plans):
        for path, offsets, shape, nbytes in plan:
            if nbytes:
                holders.setdefault((path, offsets, shape), (nbytes, []))[1].append(rank)
    load = [0] * len(plans)
    writer = {}
    for piece, (nbytes, ranks) in sorted(holders.items(), key=lambda kv: (-kv[1][0], kv[0])):
        writer[piece] = min(ranks, key=lambda r: (load[r], r))
        load[writer[piece]] += nbytes
    return writer


def overlap(a_offsets, a_shape, b_offsets, b_shape):
    """(slices in box a, slices in box b) of the intersection of two boxes, or None."""
    in_a, in_b = [], []
    for ao, an, bo, bn in zip(a_offsets, a_shape, b_offsets, b_shape):
        lo, hi = max(ao, bo), min(ao + an, bo + bn)
        if lo >= hi:
            return None
        in_a.append(slice(lo - ao, hi - ao))
        in_b.append(slice(lo - bo, hi - bo))
    return tuple(in_a), tuple(in_b)

