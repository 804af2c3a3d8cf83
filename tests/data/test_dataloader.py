"""DataLoader: batching, order across worker counts, worker errors, deaths and shutdown."""
import collections
import gc
import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest

import dtrain as dt
from dtrain.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
    get_worker_info,
)

N = 23


class DictDataset(Dataset):
    """Sample i: a (2, 3) float array of i, its square as an int, and a name."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": np.full((2, 3), i, dtype=np.float32), "y": i * i, "name": f"s{i}"}


class FailingDataset(Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == 7:
            raise ValueError("bad sample 7")
        return np.float32(i)


class KillingDataset(Dataset):
    """Kills its own worker process at index 5 (never the main process)."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i == 5 and get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.float32(i)


class SlowDataset(Dataset):
    def __init__(self, delay):
        self.delay = delay

    def __len__(self):
        return 6

    def __getitem__(self, i):
        start = time.monotonic()
        time.sleep(self.delay)
        return np.array([os.getpid(), start, time.monotonic()])


class SeedDataset(Dataset):
    """What a worker's random generators produce, plus its WorkerInfo."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        info = get_worker_info()
        return (info.id, info.seed, info.num_workers, random.random(), np.random.rand(),
                dt.rand(1, dtype=dt.float64).item(), os.getpid())


class ShardedStream(IterableDataset):
    """0..n-1, each worker reading every num_workers-th element (torch's sharding recipe)."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self):
        return self.n


def batches(loader):
    return [{k: (v.tolist() if isinstance(v, dt.Tensor) else v) for k, v in b.items()}
            for b in loader]


def expected_batches(order, batch_size):
    out = []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        out.append({"x": [np.full((2, 3), i, dtype=np.float32).tolist() for i in idx],
                    "y": [i * i for i in idx], "name": [f"s{i}" for i in idx]})
    return out


def no_children(timeout=10.0):
    """Whether every child process has exited within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while multiprocessing.active_children():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.timeout(60)
def test_same_batches_for_0_1_2_workers():
    runs = [batches(DataLoader(DictDataset(), batch_size=4, num_workers=nw)) for nw in (0, 1, 2)]
    assert runs[0] == expected_batches(list(range(N)), 4)
    assert runs[1] == runs[0] and runs[2] == runs[0]
    assert no_children()


@pytest.mark.timeout(60)
def test_shuffle_with_seeded_generator_same_for_0_1_2_workers():
    def run(nw, seed):
        loader = DataLoader(DictDataset(), batch_size=5, shuffle=True, num_workers=nw,
                            generator=dt.Generator().manual_seed(seed))
        return batches(loader)

    first = run(0, 7)
    order = [i for b in first for i in (int(np.sqrt(y)) for y in b["y"])]
    assert sorted(order) == list(range(N)) and order != list(range(N))
    assert first == expected_batches(order, 5)
    assert run(1, 7) == first and run(2, 7) == first
    assert run(2, 8) != first


def test_batch_types_and_dtypes():
    loader = DataLoader(DictDataset(), batch_size=4)
    b = next(iter(loader))
    assert b["x"].shape == (4, 2, 3) and b["x"].dtype == dt.float32
    assert b["y"].dtype == dt.int64 and b["y"].tolist() == [0, 1, 4, 9]
    assert b["name"] == ["s0", "s1", "s2", "s3"]
    tensors = TensorDataset(dt.arange(6).reshape(3, 2), dt.tensor([0.5, 1.5, 2.5]))
    x, y = next(iter(DataLoader(tensors, batch_size=3)))
    assert x.tolist() == [[0, 1], [2, 3], [4, 5]] and y.tolist() == [0.5, 1.5, 2.5]


def test_drop_last():
    loader = DataLoader(DictDataset(), batch_size=4, drop_last=True)
    got = batches(loader)
    assert len(loader) == len(got) == 5 and all(len(b["y"]) == 4 for b in got)
    full = DataLoader(DictDataset(), batch_size=4)
    assert len(full) == 6 and [len(b["y"]) for b in batches(full)][-1] == 3


@pytest.mark.timeout(60)
def test_custom_collate_and_no_batching():
    def collate(samples):
        return sum(s["y"] for s in samples)

    for nw in (0, 2):
        sums = list(DataLoader(DictDataset(), batch_size=10, collate_fn=collate, num_workers=nw))
        assert sums == [sum(i * i for i in range(s, min(s + 10, N))) for s in (0, 10, 20)]
    single = list(DataLoader(DictDataset(), batch_size=None))
    assert len(single) == N and single[3]["x"].shape == (2, 3) and single[3]["y"] == 9


def test_batch_sampler_argument():
    loader = DataLoader(DictDataset(), batch_sampler=[[3, 1], [0]])
    assert [b["y"].tolist() for b in loader] == [[9, 1], [0]]


@pytest.mark.timeout(60)
def test_worker_exception_carries_the_worker_traceback():
    loader = DataLoader(FailingDataset(), batch_size=2, num_workers=2)
    with pytest.raises(ValueError) as info:
        list(loader)
    text = str(info.value)
    assert "Caught ValueError in DataLoader worker process 1" in text  # batch [6, 7]: worker 1
    assert "Traceback (most recent call last)" in text
    assert 'raise ValueError("bad sample 7")' in text and "in __getitem__" in text
    del info

    class MissingKey(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {}["absent"]

    with pytest.raises(KeyError) as info:
        next(iter(DataLoader(MissingKey(), num_workers=1)))
    assert "\nOriginal Traceback" in str(info.value)  # readable, not an escaped repr
    del info
    gc.collect()
    assert no_children()


@pytest.mark.timeout(60)
def test_killed_worker_raises_instead_of_hanging():
    loader = DataLoader(KillingDataset(), batch_size=2, num_workers=2)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid \d+\) exited unexpectedly "
                                           r"with exit code -9"):
        list(loader)
    assert time.monotonic() - start < 20
    assert no_children()


@pytest.mark.timeout(60)
def test_timeout():
    loader = DataLoader(SlowDataset(1.0), num_workers=1, timeout=0.3)
    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.3 seconds"):
        next(iter(loader))
    gc.collect()
    assert no_children()


@pytest.mark.timeout(60)
def test_workers_run_in_parallel():
    rows = dt.cat(list(DataLoader(SlowDataset(0.3), batch_size=1, num_workers=2))).tolist()
    pids = {r[0] for r in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    overlap = any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in rows for b in rows)
    assert overlap


@pytest.mark.timeout(60)
def test_early_break_and_garbage_collection_shut_workers_down():
    loader = DataLoader(DictDataset(), batch_size=2, num_workers=2)
    for _ in loader:
        break
    gc.collect()
    assert no_children()
    it = iter(loader)
    next(it)
    assert len(multiprocessing.active_children()) == 2
    del it
    gc.collect()
    assert no_children()


@pytest.mark.timeout(60)
def test_persistent_workers_reuse_processes_and_repeat_epochs():
    loader = DataLoader(SeedDataset(), batch_size=1, num_workers=2, persistent_workers=True,
                        collate_fn=lambda b: b[0])
    first = list(loader)
    for _ in loader:  # an epoch abandoned early: its leftovers must not leak into the next
        break
    second = list(loader)
    assert {r[6] for r in first} == {r[6] for r in second}  # same worker processes
    assert [r[0] for r in first] == [0, 1, 0, 1]
    assert len(multiprocessing.active_children()) == 2
    del loader
    gc.collect()
    assert no_children()


@pytest.mark.timeout(60)
def test_worker_seeding_and_worker_info():
    def run(seed):
        loader = DataLoader(SeedDataset(), batch_size=1, num_workers=2,
                            generator=dt.Generator().manual_seed(seed), collate_fn=lambda b: b[0])
        return list(loader)

    a, b = run(3), run(3)
    assert [r[:6] for r in a] == [r[:6] for r in b]
    w0, w1 = a[0], a[1]
    assert (w0[0], w1[0], w0[2]) == (0, 1, 2)
    assert w1[1] == w0[1] + 1  # seed = base_seed + worker_id
    assert len({w0[3], w1[3]}) == 2 and len({w0[4], w1[4]}) == 2 and len({w0[5], w1[5]}) == 2
    random.seed(w0[1])
    np.random.seed(np.random.SeedSequence(w0[1]).generate_state(4))
    assert (w0[3], w0[4]) == (random.random(), np.random.rand())
    assert w0[5] == dt.Generator().manual_seed(w0[1]).rng.random()
    assert [r[:6] for r in run(4)] != [r[:6] for r in a]
    assert get_worker_info() is None


@pytest.mark.timeout(60)
def test_worker_init_fn_runs_in_each_worker():
    seen = []

    def init(worker_id):
        seen.append(worker_id)  # runs in the worker: the main process's list stays empty
        np.random.seed(100 + worker_id)

    class Draw(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return np.random.randint(1000)

    got = [int(v) for v in DataLoader(Draw(), batch_size=1, num_workers=2, worker_init_fn=init)]
    assert seen == []
    assert got == [np.random.RandomState(100 + k).randint(1000) for k in (0, 1)]


@pytest.mark.timeout(60)
def test_iterable_dataset_sharded_by_workers():
    for nw in (0, 1, 2):
        loader = DataLoader(ShardedStream(11), batch_size=3, num_workers=nw)
        values = [v for b in loader for v in b.tolist()]
        assert sorted(values) == list(range(11))
    two = [b.tolist() for b in DataLoader(ShardedStream(11), batch_size=3, num_workers=2)]
    assert two == [[0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9]]
    dropped = [b.tolist() for b in DataLoader(ShardedStream(11), batch_size=3, num_workers=2,
                                              drop_last=True)]
    assert dropped == [[0, 2, 4], [1, 3, 5], [6, 8, 10]]  # worker 1's [7, 9] is dropped
    assert len(DataLoader(ShardedStream(11), batch_size=3)) == 4
    persistent = DataLoader(ShardedStream(11), batch_size=3, num_workers=2,
                            persistent_workers=True)
    assert [b.tolist() for b in persistent] == two and [b.tolist() for b in persistent] == two
    del persistent
    gc.collect()
    assert no_children()


def test_argument_checks_match_torch():
    ds = DictDataset()
    cases = [
        (dict(num_workers=-1), "num_workers option should be non-negative"),
        (dict(timeout=-1), "timeout option should be non-negative"),
        (dict(prefetch_factor=2), "prefetch_factor option could only be specified in "
                                  "multiprocessing"),
        (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
        (dict(sampler=SequentialSampler(ds), shuffle=True), "sampler option is mutually "
                                                             "exclusive with shuffle"),
        (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
        (dict(batch_size=None, drop_last=True), "batch_size=None option disables auto-batching"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            DataLoader(ds, **kwargs)
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        DataLoader(ShardedStream(3), shuffle=True)
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        DataLoader(ds, batch_size=0)
    loader = DataLoader(ds)
    with pytest.raises(ValueError, match="batch_size attribute should not be set after "
                                         "DataLoader is initialized"):
        loader.batch_size = 3
    assert DataLoader(ds, num_workers=2).prefetch_factor == 2


def test_namedtuple_batches():
    Pair = collections.namedtuple("Pair", "a b")

    class PairDataset(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return Pair(float(i), (i, np.int32(i)))

    (batch,) = DataLoader(PairDataset(), batch_size=3)
    assert isinstance(batch, Pair) and batch.a.dtype == dt.float64
    assert batch.b[0].tolist() == [0, 1, 2] and batch.b[1].dtype == dt.int32


class BigDataset(Dataset):
    """Samples big enough that batches travel through shared memory."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"img": np.full((64, 64), i, dtype=np.float64), "t": dt.full((128, 64), float(i))}


@pytest.mark.timeout(60)
def test_large_batches_through_shared_memory_are_exact_and_leak_nothing():
    def stack_raw(samples):  # a custom collate returning plain arrays
        return np.stack([s["img"] for s in samples]), [s["t"] for s in samples]

    ref = list(DataLoader(BigDataset(), batch_size=4))
    loader = DataLoader(BigDataset(), batch_size=4, num_workers=2, persistent_workers=True)
    fds = None
    for _ in range(3):
        got = list(loader)
        assert [b["img"].tolist() for b in got] == [b["img"].tolist() for b in ref]
        assert all(isinstance(b["t"], dt.Tensor) and b["t"].shape[1:] == (128, 64) for b in got)
        assert [b["t"].numpy().sum() for b in got] == [b["t"].numpy().sum() for b in ref]
        del got
        gc.collect()
        count = len(os.listdir("/proc/self/fd"))
        assert fds is None or count <= fds  # shared-memory files are closed again
        fds = count
    raw, tensors = next(iter(DataLoader(BigDataset(), batch_size=4, num_workers=1,
                                        collate_fn=stack_raw)))
    assert isinstance(raw, np.ndarray) and raw[:, 0, 0].tolist() == [0, 1, 2, 3]
    assert [t[0, 0].item() for t in tensors] == [0, 1, 2, 3]
    del loader
    gc.collect()
    assert no_children()


class _Stuck(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(3600)


def test_workers_ignore_stop_signals_and_a_stuck_one_is_killed():
    """Workers share their rank's process group, which mpiexec signals as a whole: they must
    outlive a SIGTERM meant for the rank (its trainer checkpoints first), and a stuck one is
    still ended at shutdown."""
    it = iter(DataLoader(_Stuck(), num_workers=1, timeout=0.5))
    with pytest.raises(RuntimeError, match="timed out"):
        next(it)
    worker = it._workers[0]
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert worker.is_alive()
    start = time.monotonic()
    it._shutdown_workers()
    assert not worker.is_alive() and time.monotonic() - start < 30
    assert worker.exitcode == -signal.SIGKILL
