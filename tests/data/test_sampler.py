"""Samplers: orders, seeding, statistics, and DistributedSampler's partition of an epoch."""
import numpy as np
import pytest

import dtrain as dt
from dtrain.data import (
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    ResumableDistributedSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)


def gen(seed):
    return dt.Generator().manual_seed(seed)


def test_sequential_and_batch_sampler():
    assert list(SequentialSampler(range(5))) == [0, 1, 2, 3, 4]
    assert list(BatchSampler(range(7), 3, False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(BatchSampler(range(7), 3, True)) == [[0, 1, 2], [3, 4, 5]]
    assert len(BatchSampler(range(7), 3, False)) == 3 and len(BatchSampler(range(7), 3, True)) == 2
    with pytest.raises(ValueError, match="batch_size should be a positive integer value, but got "
                                         "batch_size=0"):
        BatchSampler(range(3), 0, False)
    with pytest.raises(ValueError, match="drop_last should be a boolean value"):
        BatchSampler(range(3), 2, 1)


def test_random_sampler_is_a_seeded_permutation():
    a = list(RandomSampler(range(50), generator=gen(1)))
    assert sorted(a) == list(range(50)) and a != list(range(50))
    assert a == list(RandomSampler(range(50), generator=gen(1)))
    assert a != list(RandomSampler(range(50), generator=gen(2)))
    # Without a generator the seed comes from the global generator (dt.manual_seed).
    dt.manual_seed(5)
    b = list(RandomSampler(range(50)))
    dt.manual_seed(5)
    assert b == list(RandomSampler(range(50)))
    # Two epochs of one sampler differ.
    s = RandomSampler(range(50), generator=gen(1))
    assert list(s) != list(s)


def test_random_sampler_num_samples_and_replacement():
    chained = list(RandomSampler(range(4), num_samples=10, generator=gen(0)))
    assert len(chained) == 10 and sorted(chained[:4]) == sorted(chained[4:8]) == [0, 1, 2, 3]
    drawn = list(RandomSampler(range(4), replacement=True, num_samples=200, generator=gen(0)))
    assert len(drawn) == 200 and set(drawn) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="num_samples should be a positive integer value"):
        RandomSampler(range(4), num_samples=0)
    with pytest.raises(TypeError, match="replacement should be a boolean value"):
        RandomSampler(range(4), replacement=1)


def test_subset_random_sampler():
    got = list(SubsetRandomSampler([10, 20, 30, 40], generator=gen(3)))
    assert sorted(got) == [10, 20, 30, 40]
    assert got == list(SubsetRandomSampler([10, 20, 30, 40], generator=gen(3)))


def test_weighted_random_sampler_counts_follow_weights():
    s = WeightedRandomSampler([1, 2, 3, 4], 1000, generator=gen(0))
    counts = np.bincount(list(s), minlength=4)
    assert counts.tolist() == [89, 188, 304, 419]  # exact for this seed
    assert np.allclose(counts / 1000, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    never = list(WeightedRandomSampler(dt.tensor([1.0, 0.0, 1.0]), 300, generator=gen(1)))
    assert 1 not in never and len(never) == 300


def test_weighted_random_sampler_without_replacement():
    s = WeightedRandomSampler([0.1, 0, 5, 1, 2], 3, replacement=False, generator=gen(0))
    assert list(s) == [3, 2, 4]
    firsts = [list(WeightedRandomSampler([1, 100], 2, replacement=False, generator=gen(k)))
              for k in range(20)]
    assert all(sorted(f) == [0, 1] for f in firsts)
    assert sum(f[0] == 1 for f in firsts) >= 18  # the heavy index almost always comes first
    with pytest.raises(RuntimeError, match="without replacement"):
        list(WeightedRandomSampler([1, 1], 3, replacement=False))
    with pytest.raises(RuntimeError, match="probability entry < 0"):
        list(WeightedRandomSampler([1, -1], 3))
    with pytest.raises(ValueError, match="weights should be a 1d sequence"):
        WeightedRandomSampler([[1, 2]], 3)


def shares(n, replicas, epoch=0, **kwargs):
    out = []
    for rank in range(replicas):
        s = DistributedSampler(range(n), num_replicas=replicas, rank=rank, **kwargs)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def test_distributed_sampler_partitions_each_epoch():
    parts = shares(12, 4, seed=3)
    assert all(len(p) == 3 for p in parts)
    assert sorted(i for p in parts for i in p) == list(range(12))  # every index exactly once
    again = shares(12, 4, seed=3)
    assert again == parts  # same seed and epoch: same shares on every rank
    later = shares(12, 4, epoch=1, seed=3)
    assert later != parts and sorted(i for p in later for i in p) == list(range(12))
    assert shares(12, 4, epoch=1, seed=3) == later
    # The permutation is the one of dt.randperm with seed `seed + epoch`.
    perm = dt.randperm(12, generator=gen(4)).tolist()
    assert later[1] == perm[1::4]
    assert shares(6, 3, shuffle=False) == [[0, 3], [1, 4], [2, 5]]


def test_distributed_sampler_uneven_lengths():
    padded = shares(10, 4, shuffle=False)  # 10 -> 12 by repeating the first indices
    assert padded == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]
    dropped = shares(10, 4, shuffle=False, drop_last=True)  # 10 -> 8: the tail is dropped
    assert dropped == [[0, 4], [1, 5], [2, 6], [3, 7]]
    tiny = shares(2, 5, shuffle=False)  # padding longer than the data repeats it
    assert tiny == [[0], [1], [0], [1], [0]]
    assert len(DistributedSampler(range(10), 4, 0)) == 3
    assert len(DistributedSampler(range(10), 4, 0, drop_last=True)) == 2


def test_distributed_sampler_environment_and_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    s = DistributedSampler(range(9), shuffle=False)
    assert (s.num_replicas, s.rank, list(s)) == (3, 2, [2, 5, 8])
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(RuntimeError, match="WORLD_SIZE environment variable is not set"):
        DistributedSampler(range(9))
    with pytest.raises(ValueError, match=r"Invalid rank 3, rank should be in the interval "
                                         r"\[0, 2\]"):
        DistributedSampler(range(9), num_replicas=3, rank=3)


def test_resumable_sampler_continues_the_global_order_on_another_world_size():
    """3 ranks consume 2 steps of 2 samples each, their state loads on 2 ranks: the rest of
    the epoch is dealt from the next unseen sample, every index exactly once."""
    n = 23
    first = [ResumableDistributedSampler(range(n), 3, r, seed=5) for r in range(3)]
    for s in first:
        s.set_epoch(1)
    seen = [i for s in first for i in list(s)[:4]]
    for s in first:
        s.advance(12)
    state = first[0].state_dict()
    assert state == {"epoch": 1, "seed": 5, "start": 12}
    order = first[0].order()
    assert sorted(seen) == sorted(order[:12])
    second = [ResumableDistributedSampler(range(n), 2, r) for r in range(2)]
    for s in second:
        s.load_state_dict(state)
        s.set_epoch(1)  # the same epoch: the position stays
    rest = [list(s) for s in second]
    assert rest[0] == order[12::2] and rest[1] == order[13::2]
    assert [len(s) for s in second] == [6, 5]
    assert sorted(seen + rest[0] + rest[1]) == list(range(n))
    second[0].set_epoch(2)
    assert second[0].start == 0 and len(second[0]) == 12
    dropped = ResumableDistributedSampler(range(n), 2, 1, drop_last=True)
    dropped.load_state_dict(state)
    assert len(dropped) == 5 and list(dropped) == order[13:22:2]
    with pytest.raises(ValueError, match="goes outside the epoch of 23 samples"):
        dropped.advance(12)
