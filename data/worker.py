"""What runs inside a DataLoader worker process: seeding, fetching, and the task loop.

A worker takes `(task_idx, batch_indices)` from its own index queue and puts
`(task_idx, batch_or_error)` on the shared result queue. `None` on the index queue asks it to
exit; a `ResumeIteration` (persistent workers) starts a new epoch and is echoed back.
"""
import itertools
import mmap
import os
import pickle
import queue
import random
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing import reduction

import numpy as np

from dtrain.core import random as rnd
from dtrain.core.tensor import Tensor

# How often a waiting process wakes up to check that the other side is still alive (seconds).
POLL_INTERVAL = 0.2
# Arrays at least this large go to the main process through shared memory, not the pipe.
SHARE_MIN_BYTES = 1 << 16
_CAN_SHARE = hasattr(os, "memfd_create") and reduction.HAVE_SEND_HANDLE


@dataclass(frozen=True)
class WorkerInfo:
    """`get_worker_info()` inside a worker: its `id`, `num_workers`, `seed` and `dataset`."""

    id: int
    num_workers: int
    seed: int
    dataset: object


_worker_info = None


def get_worker_info():
    """The `WorkerInfo` of the current DataLoader worker process; None in the main process."""
    return _worker_info


class ResumeIteration:
    """Sent to persistent workers at the start of a new epoch; they echo it back."""


@dataclass(frozen=True)
class IterableDatasetStopIteration:
    """A worker's copy of an IterableDataset is exhausted."""

    worker_id: int


class _KeyErrorMessage(str):
    def __repr__(self):
        return self


class ExceptionWrapper:
    """An exception raised in a worker, carried to the main process with its traceback text."""

    def __init__(self, where):
        exc_type, exc, _ = sys.exc_info()
        try:
            pickle.dumps(exc_type)
        except Exception:  # a type the main process could not unpickle
            exc_type = RuntimeError
        self.exc_type = exc_type
        self.message = (f"Caught {exc.__class__.__name__} {where}.\nOriginal "
                        + "".join(traceback.format_exception(exc)))

    def reraise(self):
        message = self.message
        if issubclass(self.exc_type, KeyError):  # KeyError prints repr(message): keep it readable
            message = _KeyErrorMessage(message)
        try:
            exc = self.exc_type(message)
        except Exception:  # its constructor needs other arguments
            exc = RuntimeError(self.message)
        raise exc


class SharedArray:
    """An array a worker copied into an anonymous shared-memory file (memfd).

    Only the file descriptor travels: the main process fetches it from the worker through
    multiprocessing's resource sharer (torch's "file_descriptor" strategy) and maps it
    without another copy. Nothing can leak: the memory is freed when the last process that
    maps or holds it closes it, or exits.
    """

    def __init__(self, arr, is_tensor):
        fd = os.memfd_create("dtrain-batch", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, arr.nbytes)
            with mmap.mmap(fd, arr.nbytes) as m:
                np.frombuffer(m, arr.dtype).reshape(arr.shape)[...] = arr
            self.handle = reduction.DupFd(fd)
        finally:
            os.close(fd)
        self.shape, self.dtype, self.nbytes, self.is_tensor = (arr.shape, arr.dtype, arr.nbytes,
                                                               is_tensor)

    def get(self):
        fd = self.handle.detach()
        try:
            m = mmap.mmap(fd, self.nbytes)
        finally:
            os.close(fd)
        arr = np.frombuffer(m, self.dtype).reshape(self.shape)
        return Tensor._make(arr) if self.is_tensor else arr


def _map_leaves(data, fn):
    """`data` with `fn` applied to everything but plain dicts, lists, tuples and namedtuples."""
    if type(data) is dict:
        return {k: _map_leaves(v, fn) for k, v in data.items()}
    if type(data) is list:
        return [_map_leaves(v, fn) for v in data]
    if isinstance(data, tuple) and (type(data) is tuple or hasattr(data, "_fields")):
        items = [_map_leaves(v, fn) for v in data]
        return tuple(items) if type(data) is tuple else type(data)(*items)
    return fn(data)


def _share_leaf(x):
    if isinstance(x, Tensor) and not x.requires_grad and isinstance(x._data, np.ndarray):
        arr, is_tensor = x._data, True
    elif isinstance(x, np.ndarray):
        arr, is_tensor = x, False
    else:
        return x
    if arr.nbytes < SHARE_MIN_BYTES or arr.dtype.hasobject:
        return x
    return SharedArray(arr, is_tensor)


def share_arrays(data):
    """In a worker: large NumPy-backed arrays and tensors of a batch -> `SharedArray`s."""
    return _map_leaves(data, _share_leaf) if _CAN_SHARE else data


def receive_arrays(data):
    """In the main process: `SharedArray`s of a batch -> arrays and tensors again."""
    return _map_leaves(data, lambda x: x.get() if isinstance(x, SharedArray) else x)


def seed_worker(seed):
    """Seed Python's `random`, NumPy's global RNG and dtrain's generators with `seed`."""
    random.seed(seed)
    np.random.seed(np.random.SeedSequence(seed).generate_state(4))
    rnd.manual_seed(seed)


def make_fetcher(dataset, is_iterable, auto_collation, collate_fn, drop_last):
    """A function from a batch of indices (or one index) to the collated data.

    For an IterableDataset the indices only say how many samples to take from the stream;
    it raises StopIteration when the stream is exhausted.
    """
    if is_iterable:
        stream = iter(dataset)

        def fetch(index):
            if not auto_collation:
                return collate_fn(next(stream))
            items = list(itertools.islice(stream, len(index)))
            if not items or (drop_last and len(items) < len(index)):
                raise StopIteration
            return collate_fn(items)
        return fetch

    getitems = getattr(dataset, "__getitems__", None)

    def fetch(index):
        if not auto_collation:
            return collate_fn(dataset[index])
        items = getitems(index) if getitems else [dataset[i] for i in index]
        return collate_fn(items)
    return fetch


def _ignore_stop_signals():
    """A worker is stopped by its DataLoader (through its queue, or SIGKILL when stuck), not
    by signals: those sent to a rank's whole process group (mpiexec passes the launcher's
    SIGTERM on that way, the terminal sends Ctrl-C's SIGINT) would otherwise end it before
    the main process reaches its own decision, e.g. the trainer's checkpoint at the next
    step; handlers inherited from the main process (the trainer's stop flags) mean nothing
    here."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def worker_loop(dataset, is_iterable, index_queue, result_queue, done_event, auto_collation,
                collate_fn, drop_last, base_seed, init_fn, worker_id, num_workers, parent_pid):
    """The body of worker process `worker_id` (see the module docstring for the protocol)."""
    global _worker_info
    _ignore_stop_signals()
    seed = base_seed + worker_id
    seed_worker(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    init_error = None
    try:
        if init_fn is not None:
            init_fn(worker_id)
        fetch = make_fetcher(dataset, is_iterable, auto_collation, collate_fn, drop_last)
    except Exception:
        init_error = ExceptionWrapper(f"in DataLoader worker process {worker_id}")
    iteration_end = False
    while True:
        try:
            task = index_queue.get(timeout=POLL_INTERVAL)
        except queue.Empty:
            # Also leave when the main process died, or asked us to stop without being
            # able to send None (e.g. its iterator was freed by the garbage collector).
            if done_event.is_set() or os.getppid() != parent_pid:
                break
            continue
        if task is None:
            break
        if isinstance(task, ResumeIteration):
            if init_error is None:
                fetch = make_fetcher(dataset, is_iterable, auto_collation, collate_fn,
                                     drop_last)
            iteration_end = False
            result_queue.put((task, None))
            continue
        if done_event.is_set() or iteration_end:
            continue
        idx, index = task
        if init_error is not None:  # every task reports the failed start-up
            data = init_error
        else:
            try:
                data = share_arrays(fetch(index))
            except Exception as exc:
                if isinstance(exc, StopIteration) and is_iterable:
                    data = IterableDatasetStopIteration(worker_id)
                    iteration_end = True
                else:
                    data = ExceptionWrapper(f"in DataLoader worker process {worker_id}")
        result_queue.put((idx, data))
        del data
    if done_event.is_set():  # don't block exit on results that nobody will read
        result_queue.cancel_join_thread()
        result_queue.close()
