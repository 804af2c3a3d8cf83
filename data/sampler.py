"""Samplers as `torch.utils.data`: they yield dataset indices (or lists of them) in order.

Random samplers draw from a `dt.Generator` (the global default one when none is given), so a
seeded generator reproduces the order exactly.
"""
import itertools
import math
import os

import numpy as np

from dtrain.core import random as rnd
from dtrain.core.creation import randint, randperm


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} should be a positive integer value, but got {name}={value}")


def _cpu_rng(generator):
    """The numpy Generator behind `generator` (default: the global CPU generator)."""
    gen = rnd.default_generator() if generator is None else generator
    if gen.device.type != "cpu":
        raise RuntimeError(f"samplers need a 'cpu' generator, got one on '{gen.device}'")
    return gen.rng


def _fresh_seed():
    """A seed drawn from the global generator, as torch's `empty((), int64).random_()`."""
    return randint(0, 2**63 - 1, (1,)).item()


class Sampler:
    """Base class: subclasses implement `__iter__` (and `__len__` when the length is known)."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation of the indices, or `num_samples` draws with replacement.

    Without `generator` each epoch draws a fresh seed from the global generator (so
    `dt.manual_seed` makes the order reproducible); with one, it draws from `generator`.
    Without replacement and `num_samples > len(data_source)` whole permutations are chained.
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(replacement, bool):
            raise TypeError("replacement should be a boolean value, but got "
                            f"replacement={replacement}")
        _check_positive_int("num_samples", self.num_samples)

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        generator = self.generator
        if generator is None:
            generator = rnd.Generator().manual_seed(_fresh_seed())
        if self.replacement:
            yield from randint(0, n, (self.num_samples,), generator=generator).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from randperm(n, generator=generator).tolist()
        yield from randperm(n, generator=generator).tolist()[:self.num_samples % n]

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order."""

    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = generator

    def __iter__(self):
        for i in randperm(len(self.indices), generator=self.generator).tolist():
            yield self.indices[i]

    def __len__(self):
        return len(self.indices)


def multinomial_indices(weights, num_samples, replacement, rng):
    """`num_samples` category indices drawn with probabilities proportional to `weights`.

    With replacement: inverse-CDF sampling. Without: the exponential race (keys
    `E_i / w_i`, smallest first), which is sequential weighted sampling without replacement.
    """
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise RuntimeError("invalid multinomial distribution (encountering probability entry "
                           "< 0)")
    total = weights.sum()
    if total <= 0:
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    if replacement:
        cdf = np.cumsum(weights)
        picks = np.searchsorted(cdf, rng.random(num_samples) * cdf[-1], side="right")
        return np.minimum(picks, len(weights) - 1)
    if num_samples > len(weights):
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without "
                           f"replacement (n_sample={num_samples}, size={len(weights)})")
    with np.errstate(divide="ignore"):
        keys = rng.standard_exponential(len(weights)) / weights
    return np.argsort(keys, kind="stable")[:num_samples]


class WeightedRandomSampler(Sampler):
    """Indices `0..len(weights)-1` drawn with probability proportional to `weights`."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        _check_positive_int("num_samples", num_samples)
        if not isinstance(replacement, bool):
            raise ValueError("replacement should be a boolean value, but got "
                             f"replacement={replacement}")
        weights = np.asarray(weights.tolist() if hasattr(weights, "tolist") else weights,
                             dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError("weights should be a 1d sequence but given weights have shape "
                             f"{tuple(weights.shape)}")
        self.weights = weights
        self.num_samples = int(num_samples)
        self.replacement = replacement
        self.generator = generator

    def __iter__(self):
        picks = multinomial_indices(self.weights, self.num_samples, self.replacement,
                                    _cpu_rng(self.generator))
        yield from picks.tolist()

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of `sampler` into lists of `batch_size` (the last may be short)."""

    def __init__(self, sampler, batch_size, drop_last):
        _check_positive_int("batch_size", batch_size)
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self):
        it = iter(self.sampler)
        while batch := list(itertools.islice(it, self.batch_size)):
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch

    def __len__(self):
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size


def _from_env(name, var):
    value = os.environ.get(var)
    if value is None:
        raise RuntimeError(f"DistributedSampler: {name} was not given and the {var} "
                           f"environment variable is not set; pass {name}=... or start the "
                           "program with a launcher that sets WORLD_SIZE and RANK")
    return int(value)


class DistributedSampler(Sampler):
    """The share of the indices that rank `rank` of `num_replicas` reads in one epoch.

    Every epoch the indices (shuffled with seed `seed + epoch` when `shuffle`; call
    `set_epoch(epoch)` before each epoch) are split round robin: rank r gets positions
    r, r + num_replicas, ... . When `len(dataset)` is divisible by `num_replicas` every index
    is read exactly once per epoch across ranks. When it is not, torch's rule applies:
    `drop_last=False` pads the list by repeating its first indices until it divides evenly
    (a few samples are read twice), `drop_last=True` drops its tail (a few are not read).
    All ranks must use the same `seed`. `num_replicas` and `rank` default to the WORLD_SIZE
    and RANK environment variables.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        if num_replicas is None:
            num_replicas = _from_env("num_replicas", "WORLD_SIZE")
        if rank is None:
            rank = _from_env("rank", "RANK")
        _check_positive_int("num_replicas", num_replicas)
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % num_replicas != 0:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle
        self.seed = seed

    def order(self):
        """The epoch's global order of every index: a permutation seeded with `seed + epoch`
        when `shuffle` (the same on every rank), else 0, 1, ..., n - 1."""
        n = len(self.dataset)
        if self.shuffle:
            g = rnd.Generator().manual_seed(self.seed + self.epoch)
            return randperm(n, generator=g).tolist()
        return list(range(n))

    def __iter__(self):
        indices = self.order()
        if self.drop_last:
            indices = indices[:self.total_size]
        else:
            padding = self.total_size - len(indices)
            if padding:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Make the next epoch's shuffle use seed `seed + epoch` (call before each epoch)."""
        self.epoch = epoch


class ResumableDistributedSampler(DistributedSampler):
    """A DistributedSampler whose position in the epoch is global, so that it resumes on any
    number of ranks.

    `start` counts the samples of the epoch's global order (`order()`) already consumed by
    all ranks together; iterating deals the rest, `order()[start:]`, round robin to the
    `num_replicas` ranks (rank r gets positions start + r, start + r + num_replicas, ...).
    Ranks that consume their shares in lockstep, the same number of samples each per step,
    consume a prefix of the global order: a consumer advances `start` by the samples all
    ranks consumed (`advance`), and `state_dict()` (epoch, seed, start) taken on N ranks
    and loaded on M continues the same order from the next unseen sample.

    There is no padding: with `drop_last=False` every index is dealt exactly once per epoch
    and the shares differ by at most one sample (the consumer evens out the last step);
    with `drop_last=True` the last `len(rest) % num_replicas` indices are not dealt this
    epoch, so that every share has the same length. `set_epoch` to another epoch starts
    it at position 0.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        super().__init__(dataset, num_replicas, rank, shuffle, seed, drop_last)
        self.start = 0

    def _rest(self):
        """How many indices of the epoch are dealt from `start` on."""
        rest = max(len(self.dataset) - self.start, 0)
        return rest - rest % self.num_replicas if self.drop_last else rest

    def __iter__(self):
        end = self.start + self._rest()
        return iter(self.order()[self.start + self.rank:end:self.num_replicas])

    def __len__(self):
        return len(range(self.rank, self._rest(), self.num_replicas))

    def set_epoch(self, epoch):
        """Make the next iteration deal epoch `epoch` (from position 0 if it is another
        epoch than the current one, from `start` if it is the same)."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def advance(self, count):
        """Record that all ranks together consumed `count` more samples of this epoch."""
        if count < 0 or self.start + count > len(self.dataset):
            raise ValueError(f"advance({count}) from position {self.start} goes outside the "
                             f"epoch of {len(self.dataset)} samples")
        self.start += count

    def state_dict(self):
        """The global data position: {"epoch", "seed", "start"}."""
        return {"epoch": self.epoch, "seed": self.seed, "start": self.start}

    def load_state_dict(self, state):
        """Continue from a `state_dict()` taken on any number of ranks."""
        if not 0 <= state["start"] <= len(self.dataset):
            raise ValueError(f"position {state['start']} is outside an epoch of "
                             f"{len(self.dataset)} samples (a checkpoint of another data set?)")
        self.epoch, self.seed, self.start = state["epoch"], state["seed"], state["start"]
