"""Dataset combinators and default_collate."""
import collections

import numpy as np
import pytest

import dtrain as dt
from dtrain.data import (
    ConcatDataset,
    IterableDataset,
    StackDataset,
    Subset,
    TensorDataset,
    default_collate,
    default_convert,
    random_split,
)


def test_tensor_dataset():
    ds = TensorDataset(dt.arange(8).reshape(4, 2), dt.tensor([1.0, 2.0, 3.0, 4.0]))
    x, y = ds[2]
    assert len(ds) == 4 and x.tolist() == [4, 5] and y.item() == 3.0
    assert ds[1:3][0].tolist() == [[2, 3], [4, 5]]
    w = dt.ones(3, 2, requires_grad=True)
    TensorDataset(w)[1][0].sum().backward()  # rows of a tensor with grad stay differentiable
    assert w.grad.tolist() == [[0, 0], [1, 1], [0, 0]]
    with pytest.raises(ValueError, match=r"Size mismatch between tensors: first dimensions are "
                                         r"\[4, 3\]"):
        TensorDataset(dt.zeros(4), dt.zeros(3))


def test_subset_and_concat():
    sub = Subset(list(range(10, 20)), [3, 0, 7])
    assert len(sub) == 3 and [sub[i] for i in range(3)] == [13, 10, 17]
    assert sub.__getitems__([2, 0]) == [17, 13]
    cat = ConcatDataset([[0, 1, 2], [3, 4], [5]])
    assert len(cat) == 6 and [cat[i] for i in range(6)] == list(range(6))
    assert cat[-1] == 5 and cat[-6] == 0 and cat.cumulative_sizes == [3, 5, 6]
    with pytest.raises(ValueError, match="absolute value of index should not exceed"):
        cat[-7]
    with pytest.raises(IndexError):
        cat[6]
    with pytest.raises(AssertionError, match="datasets should not be an empty iterable"):
        ConcatDataset([])
    with pytest.raises(AssertionError, match="does not support IterableDataset"):
        ConcatDataset([IterableDataset()])
    both = TensorDataset(dt.arange(2)) + TensorDataset(dt.arange(3))
    assert isinstance(both, ConcatDataset) and len(both) == 5


def test_random_split_lengths_fractions_and_seed():
    data = list(range(10))
    a, b = random_split(data, [3, 7], generator=dt.Generator().manual_seed(0))
    assert (len(a), len(b)) == (3, 7)
    assert sorted([a[i] for i in range(3)] + [b[i] for i in range(7)]) == data
    perm = dt.randperm(10, generator=dt.Generator().manual_seed(0)).tolist()
    assert a.indices == perm[:3] and b.indices == perm[3:]
    parts = random_split(range(11), [0.3, 0.3, 0.4], generator=dt.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [4, 3, 4]  # floor: 3, 3, 4; remainder 1 to the first
    again = random_split(range(11), [0.3, 0.3, 0.4], generator=dt.Generator().manual_seed(1))
    assert [p.indices for p in parts] == [p.indices for p in again]
    with pytest.raises(ValueError, match="Sum of input lengths does not equal"):
        random_split(data, [3, 3])
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(range(2), [1.0, 0.0])


def test_default_collate_types():
    batch = default_collate([np.arange(3, dtype=np.float32), np.arange(3, dtype=np.float32) + 1])
    assert isinstance(batch, dt.Tensor) and batch.dtype == dt.float32
    assert batch.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert default_collate([1.5, 2.5]).dtype == dt.float64
    assert default_collate([1, 2]).dtype == dt.int64
    assert default_collate([True, False]).dtype == dt.bool
    assert default_collate([np.float32(1), np.float32(2)]).dtype == dt.float32
    stacked = default_collate([dt.ones(2), dt.zeros(2)])
    assert stacked.tolist() == [[1, 1], [0, 0]] and not stacked.requires_grad
    leaf = dt.ones(2, requires_grad=True)
    tracked = default_collate([leaf, dt.zeros(2)])
    assert tracked.requires_grad
    tracked.sum().backward()
    assert leaf.grad.tolist() == [1.0, 1.0]
    nested = default_collate([{"a": (1, [2.0, "u"])}, {"a": (3, [4.0, "v"])}])
    assert nested["a"][0].tolist() == [1, 3] and nested["a"][1][0].tolist() == [2.0, 4.0]
    assert nested["a"][1][1] == ["u", "v"] and isinstance(nested["a"], list)
    ordered = default_collate([collections.OrderedDict(x=1)] * 2)
    assert isinstance(ordered, collections.OrderedDict)
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="default_collate: batch must contain tensors"):
        default_collate([object(), object()])
    converted = default_convert({"x": np.ones(2), "n": 3})
    assert isinstance(converted["x"], dt.Tensor) and converted["n"] == 3


def test_stack_dataset_tuple_and_dict_samples():
    images, labels = dt.arange(12).reshape(4, 3), ["a", "b", "c", "d"]
    ds = StackDataset(TensorDataset(images), labels)
    assert len(ds) == 4
    (x,), y = ds[2]
    assert x.tolist() == [6, 7, 8] and y == "c"
    named = StackDataset(image=images, label=labels)
    assert named[1]["label"] == "b" and named[1]["image"].tolist() == [3, 4, 5]
    batch = next(iter(dt.utils.data.DataLoader(named, batch_size=2)))
    assert batch["image"].tolist() == [[0, 1, 2], [3, 4, 5]] and batch["label"] == ["a", "b"]
    with pytest.raises(ValueError, match="Size mismatch between datasets"):
        StackDataset(images, labels[:3])
    with pytest.raises(ValueError, match="both types are given"):
        StackDataset(images, label=labels)
