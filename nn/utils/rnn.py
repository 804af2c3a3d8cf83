"""Batches of variable-length sequences (`dt.nn.utils.rnn`), with torch's layouts.

A `PackedSequence` holds a batch time-major, each step only for the sequences still running
(sorted by decreasing length): `data` (sum of lengths, *), `batch_sizes[t]` the number of
sequences at step t (an int64 CPU tensor), and the permutation that sorted the batch.
Packing and unpacking are gathers (index_select), so gradients flow through them.
"""
from collections import namedtuple

import numpy as np

from dtrain.autograd.ops.index import index_select
from dtrain.autograd.ops.shape import cat, pad, stack
from dtrain.autograd.registry import Sample, SampleMaker, register_composite
from dtrain.core import backend, creation
from dtrain.core.tensor import Tensor


def _as_indices(array, device):
    return creation.tensor(np.asarray(array, dtype=np.int64), device=device)


def host_indices(t):
    """An index tensor of the packing (batch_sizes, a permutation) as a NumPy array, read
    from its array directly: bookkeeping that a compiled graph keeps as a constant, not a
    data-dependent host read."""
    return backend.to_device(t._data, backend.normalize_device("cpu"))


def _lengths(sizes):
    """The length of each sequence of a sorted batch from the batch sizes per step."""
    return (sizes[:, None] > np.arange(sizes[0])[None, :]).sum(0)


def _packed_rows(sizes, n):
    """For each packed row, its row in the (T * n, *) time-major padded layout."""
    return np.concatenate([t * n + np.arange(b) for t, b in enumerate(sizes)])


class PackedSequence(namedtuple("PackedSequence",
                                ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """A packed batch (see the module docstring); nn.RNN, LSTM and GRU take one as input and
    return their output as one. `unsorted_indices` is derived from `sorted_indices`."""

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if unsorted_indices is None and sorted_indices is not None:
            inverse = np.empty(len(sorted_indices), dtype=np.int64)
            inverse[host_indices(sorted_indices)] = np.arange(len(inverse))
            unsorted_indices = _as_indices(inverse, sorted_indices.device)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args, **kwargs):
        """`data` moved/cast as Tensor.to; the permutations follow data's device and
        `batch_sizes` stays on the CPU, as torch."""
        data = self.data.to(*args, **kwargs)
        perms = [None if p is None else p.to(data.device)
                 for p in (self.sorted_indices, self.unsorted_indices)]
        return type(self)(data, self.batch_sizes, *perms)

    @property
    def is_cuda(self):
        return self.data.is_cuda


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack (L_i, *) tensors into (L_max, B, *) ((B, L_max, *) with batch_first), each
    padded with `padding_value` at its end (its start with padding_side="left")."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got "
                         f"{padding_side}.")
    sequences = list(sequences)
    if not sequences:
        raise RuntimeError("pad_sequence: received an empty list of sequences")
    longest = max(s._data.shape[0] for s in sequences)
    padded = []
    for s in sequences:
        extra = longest - s._data.shape[0]
        edge = (0, extra) if padding_side == "right" else (extra, 0)
        padded.append(pad(s, (0, 0) * (s._data.ndim - 1) + edge, value=padding_value)
                      if extra else s)
    return stack(padded, 0 if batch_first else 1)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) ((B, T, *) with batch_first) of sequences of the given
    `lengths` (a list or 1-D tensor). With enforce_sorted=True the lengths must be
    decreasing; otherwise the batch is sorted here and the permutation is kept."""
    lengths = np.asarray(lengths.tolist() if isinstance(lengths, Tensor) else lengths,
                         dtype=np.int64)
    batch_dim = 0 if batch_first else 1
    n = input._data.shape[batch_dim]
    if lengths.ndim != 1 or len(lengths) != n:
        raise RuntimeError(f"Expected `len(lengths)` to be equal to batch_size, but got "
                           f"{lengths.size} (batch_size={n})")
    if lengths.min() <= 0:
        raise RuntimeError("Length of all samples has to be greater than 0, but found an "
                           "element in 'lengths' that is <= 0")
    sorted_indices = None
    if enforce_sorted:
        if np.any(lengths[:-1] < lengths[1:]):
            raise RuntimeError("`lengths` array must be sorted in decreasing order when "
                               "`enforce_sorted` is True. You can pass `enforce_sorted=False` "
                               "to pack_padded_sequence and/or pack_sequence to sidestep this "
                               f"requirement if you do not need ONNX exportability (got "
                               f"{lengths.tolist()})")
    else:
        order = np.argsort(-lengths, kind="stable")
        lengths = lengths[order]
        sorted_indices = _as_indices(order, input.device)
        input = index_select(input, batch_dim, sorted_indices)
    if batch_first:
        input = input.transpose(0, 1)
    steps, rest = input._data.shape[0], input._data.shape[2:]
    if lengths[0] > steps:
        raise RuntimeError(f"pack_padded_sequence: a length of {lengths[0]} exceeds the "
                           f"{steps} steps of the padded input")
    sizes = (lengths[None, :] > np.arange(lengths[0])[:, None]).sum(1)
    rows = _as_indices(_packed_rows(sizes, n), input.device)
    data = index_select(input.reshape(steps * n, *rest), 0, rows)
    return PackedSequence(data, _as_indices(sizes, "cpu"), sorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Inverse of pack_padded_sequence: (padded (T, B, *) or (B, T, *), lengths) in the
    batch's original order; T is the longest length, or `total_length`."""
    sizes = host_indices(sequence.batch_sizes)
    data = sequence.data
    n, steps = int(sizes[0]), len(sizes)
    if total_length is not None:
        if total_length < steps:
            raise ValueError(f"Expected total_length to be at least the length of the longest "
                             f"sequence in input, but got total_length={total_length} and max "
                             f"sequence length being {steps}")
        steps = total_length
    rest = data._data.shape[1:]
    index = np.full(steps * n, data._data.shape[0], dtype=np.int64)  # the padding row
    index[_packed_rows(sizes, n)] = np.arange(data._data.shape[0])
    fill = creation.full((1,) + rest, padding_value, dtype=data.dtype, device=data.device)
    padded = index_select(cat([data, fill]), 0, _as_indices(index, data.device))
    padded = padded.reshape(steps, n, *rest)
    lengths = _lengths(sizes)
    if sequence.unsorted_indices is not None:
        padded = index_select(padded, 1, sequence.unsorted_indices)
        lengths = lengths[host_indices(sequence.unsorted_indices)]
    return (padded.transpose(0, 1) if batch_first else padded), _as_indices(lengths, "cpu")


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of (L_i, *) tensors (decreasing lengths unless enforce_sorted=False)."""
    sequences = list(sequences)
    return pack_padded_sequence(pad_sequence(sequences), [s._data.shape[0] for s in sequences],
                                enforce_sorted=enforce_sorted)


def _packing_samples():
    s = SampleMaker("packed_sequence")
    return [Sample(lambda a, b, c: pad_sequence([a, b, c], batch_first=True, padding_value=2.0,
                                                padding_side="left"),
                   (s(2, 3), s(4, 3), s(1, 3))),
            Sample(lambda x: pack_padded_sequence(x, [2, 4, 1], enforce_sorted=False).data,
                   (s(4, 3, 2),)),
            Sample(lambda a, b: pad_packed_sequence(pack_sequence([a, b], enforce_sorted=False),
                                                    batch_first=True, total_length=4)[0],
                   (s(1, 2), s(3, 2)))]


register_composite("packed_sequence", _packing_samples)
