"""Dataset types as `torch.utils.data`: map-style and iterable, plus the usual combinators."""
import bisect
import itertools
import math
import warnings

from dtrain.core.creation import randperm
from dtrain.core.tensor import Tensor


class Dataset:
    """A map-style data set: `dataset[i]` for `i` in `range(len(dataset))`.

    Subclasses implement `__getitem__` (and usually `__len__`). They may also implement
    `__getitems__(indices)` to fetch a whole batch at once; the DataLoader then calls it
    instead of one `__getitem__` per index (as torch does).
    """

    def __getitem__(self, index):
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A data set read as a stream: subclasses implement `__iter__`.

    With `num_workers > 0` every worker process iterates its own copy of the data set, so
    without sharding each sample would be produced once per worker. Shard inside `__iter__`
    with `dtrain.data.get_worker_info()` (its `id` and `num_workers`), exactly as in torch.
    """

    def __iter__(self):
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other):
        return ChainDataset([self, other])


def _row(tensor, index):
    """`tensor[index]`; for an int index of a tensor without grad, a plain view of its array
    (the same values and memory, without the cost of an autograd op per sample)."""
    if isinstance(index, int) and not tensor.requires_grad:
        return Tensor._make(tensor._data[index])
    return tensor[index]


class TensorDataset(Dataset):
    """Samples are the rows of tensors that share their first dimension: `(t1[i], t2[i], ...)`."""

    def __init__(self, *tensors):
        sizes = [t.shape[0] for t in tensors]
        if any(s != sizes[0] for s in sizes):
            raise ValueError(f"Size mismatch between tensors: first dimensions are {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(_row(t, index) for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class StackDataset(Dataset):
    """Samples of several data sets of one length side by side: `StackDataset(a, b)[i]` is
    `(a[i], b[i])`, `StackDataset(x=a, y=b)[i]` is `{"x": a[i], "y": b[i]}`."""

    def __init__(self, *args, **kwargs):
        if args and kwargs:
            raise ValueError("Supported either ``tuple``- (via ``args``) or``dict``- (via "
                             "``kwargs``) like input/output, but both types are given.")
        datasets = args or tuple(kwargs.values())
        if not datasets:
            raise ValueError("At least one dataset should be passed")
        lengths = [len(d) for d in datasets]
        if any(n != lengths[0] for n in lengths):
            raise ValueError(f"Size mismatch between datasets: lengths {lengths}")
        self._length = lengths[0]
        self.datasets = args or kwargs

    def __getitem__(self, index):
        if isinstance(self.datasets, dict):
            return {k: d[index] for k, d in self.datasets.items()}
        return tuple(d[index] for d in self.datasets)

    def __len__(self):
        return self._length


class ChainDataset(IterableDataset):
    """Iterable data sets read one after another (`IterableDataset + IterableDataset`)."""

    def __init__(self, datasets):
        self.datasets = datasets

    def __iter__(self):
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise TypeError("ChainDataset only supports IterableDataset")
            yield from d

    def __len__(self):
        return sum(len(d) for d in self.datasets)


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __getitems__(self, indices):
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            return getitems([self.indices[i] for i in indices])
        return [self.dataset[self.indices[i]] for i in indices]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """Map-style data sets joined end to end."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise AssertionError("datasets should not be an empty iterable")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise AssertionError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        if dataset_idx == len(self.datasets):
            raise IndexError(f"index {idx} is out of range for ConcatDataset of length "
                             f"{len(self)}")
        offset = self.cumulative_sizes[dataset_idx - 1] if dataset_idx > 0 else 0
        return self.datasets[dataset_idx][idx - offset]


def _lengths_from_fractions(fractions, n):
    """torch's rule: floor(n * f) each, then the remainder one by one, round robin."""
    lengths = []
    for i, frac in enumerate(fractions):
        if frac < 0 or frac > 1:
            raise ValueError(f"Fraction at index {i} is not between 0 and 1")
        lengths.append(math.floor(n * frac))
    for i in range(n - sum(lengths)):
        lengths[i % len(lengths)] += 1
    for i, length in enumerate(lengths):
        if length == 0:
            warnings.warn(f"Length of split at index {i} is 0. This might result in an empty "
                          "dataset.", stacklevel=3)
    return lengths


def random_split(dataset, lengths, generator=None):
    """Split `dataset` into non-overlapping random `Subset`s of the given lengths.

    `lengths` holds sizes summing to `len(dataset)`, or fractions summing to 1 (sizes are then
    `floor(frac * n)` with the remainder spread round robin, as torch). `generator` (a
    `dt.Generator`, default: the global one) makes the split reproducible.
    """
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        lengths = _lengths_from_fractions(lengths, len(dataset))
    if sum(lengths) != len(dataset):
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    indices = randperm(sum(lengths), generator=generator).tolist()
    bounds = list(itertools.accumulate(lengths))
    return [Subset(dataset, indices[end - length:end]) for length, end in zip(lengths, bounds)]
