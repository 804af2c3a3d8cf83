"""`DataLoader`: batches from a data set, in the main process or in worker processes.

With `num_workers > 0` the sampler still runs in the main process; batches of indices go
round robin to the workers' own index queues (at most `prefetch_factor` per worker in
flight), results come back through one result queue and are put back in sampler order. So
for a given seed the batches are the same, in the same order, whatever `num_workers`.
"""
import itertools
import math
import multiprocessing
import queue
import signal
import time
import warnings

from dtrain.core import backend
from dtrain.core.creation import randint
from dtrain.data import worker as w
from dtrain.data.collate import default_collate, default_convert
from dtrain.data.dataset import IterableDataset
from dtrain.data.sampler import BatchSampler, RandomSampler, SequentialSampler

# Seconds to wait for a worker to exit by itself before terminating it.
SHUTDOWN_TIMEOUT = 5.0


class _InfiniteConstantSampler:
    """The sampler of an IterableDataset: the stream decides what comes next."""

    def __iter__(self):
        return itertools.repeat(None)


def _mp_context(context):
    """'fork' where the platform has it (fast start, nothing to pickle), else 'spawn'."""
    if context is None:
        methods = multiprocessing.get_all_start_methods()
        return multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    if isinstance(context, str):
        methods = multiprocessing.get_all_start_methods()
        if context not in methods:
            raise ValueError("multiprocessing_context option should specify a valid start "
                             f"method in {methods!r}, but got multiprocessing_context="
                             f"{context!r}")
        return multiprocessing.get_context(context)
    return context


class DataLoader:
    """Iterate over `dataset` in batches, as `torch.utils.data.DataLoader`.

    Arguments and their checks follow torch. `shuffle=True` uses a `RandomSampler` drawing from
    `generator`; `num_workers > 0` loads in that many worker processes (started with 'fork'
    where available); `persistent_workers` keeps them between epochs; `timeout` (seconds)
    bounds the wait for one batch. `pin_memory` is accepted for compatibility; batches stay
    in ordinary host memory. Workers are seeded with `base_seed + worker_id` (base seed drawn
    from `generator`) for Python's `random`, NumPy's global RNG and dtrain's generators;
    `get_worker_info()` tells code which worker it runs in. With 'fork', data sets must not
    hold CUDA arrays (CUDA does not survive a fork); move batches to the GPU after loading.
    """

    _locked = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset",
               "persistent_workers")
    _initialized = False

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False):
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to "
                             "disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in "
                             "multiprocessing.let num_workers > 0 to enable multiprocessing, "
                             "otherwise set prefetch_factor to None.")
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None and prefetch_factor < 0:
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if multiprocessing_context is not None and num_workers == 0:
            raise ValueError("multiprocessing_context can only be used with multi-process "
                             f"loading (num_workers > 0), but got num_workers={num_workers}")

        self._is_iterable = isinstance(dataset, IterableDataset)
        if self._is_iterable:
            if shuffle not in (False, None):
                raise ValueError("DataLoader with IterableDataset: expected unspecified shuffle "
                                 f"option, but got shuffle={shuffle}")
            if sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler "
                                 f"option, but got sampler={sampler}")
            if batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified "
                                 f"batch_sampler option, but got batch_sampler={batch_sampler}")
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually "
                             "exclusive with drop_last")
        if sampler is None:
            if self._is_iterable:
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        if pin_memory and not backend.cuda_is_available():
            warnings.warn("'pin_memory' argument is set as true but no accelerator is found, "
                          "then device pinned memory won't be used.", stacklevel=2)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.persistent_workers = persistent_workers
        if collate_fn is None:
            collate_fn = default_collate if batch_sampler is not None else default_convert
        self.collate_fn = collate_fn
        self._iterator = None
        self._initialized = True

    def __setattr__(self, name, value):
        if self._initialized and name in self._locked:
            raise ValueError(f"{name} attribute should not be set after "
                             f"{type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self):
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if not self.persistent_workers:
            return _MultiProcessIter(self)
        if self._iterator is None or self._iterator._shutdown:  # first epoch, or after an error
            self._iterator = _MultiProcessIter(self)
        else:
            self._iterator._reset(self)
        return self._iterator

    def __len__(self):
        if not self._is_iterable:
            return len(self._index_sampler)
        length = len(self.dataset)
        if self.batch_size is not None:
            length = (length // self.batch_size if self.drop_last
                      else math.ceil(length / self.batch_size))
        return length


class _BaseIter:
    def __init__(self, loader):
        self._dataset = loader.dataset
        self._is_iterable = loader._is_iterable
        self._auto_collation = loader._auto_collation
        self._drop_last = loader.drop_last
        self._collate_fn = loader.collate_fn
        self._index_sampler = loader._index_sampler
        self._sampler_iter = iter(self._index_sampler)
        # Drawn for every num_workers (as torch), so that a seeded generator gives the same
        # shuffle whatever the number of workers.
        self._base_seed = randint(0, 2**63 - 1, (1,), generator=loader.generator).item()

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._index_sampler)

    def _reset(self, loader):
        self._sampler_iter = iter(self._index_sampler)

    def _next_index(self):
        return next(self._sampler_iter)


class _SingleProcessIter(_BaseIter):
    def __init__(self, loader):
        super().__init__(loader)
        self._fetch = w.make_fetcher(self._dataset, self._is_iterable, self._auto_collation,
                                     self._collate_fn, self._drop_last)

    def __next__(self):
        return self._fetch(self._next_index())


class _MultiProcessIter(_BaseIter):
    """Worker processes, their queues, and the bookkeeping that restores sampler order.

    Task `i` is the i-th batch of indices. `_task_info[i]` is `(worker,)` while in flight and
    `(worker, data)` once it arrived early; `_rcvd_idx` is the next task to return.
    """

    def __init__(self, loader):
        super().__init__(loader)
        self._num_workers = loader.num_workers
        self._prefetch_factor = loader.prefetch_factor
        self._timeout = loader.timeout
        self._persistent = loader.persistent_workers
        ctx = _mp_context(loader.multiprocessing_context)
        self._result_queue = ctx.Queue()
        self._done_event = ctx.Event()
        self._index_queues, self._workers = [], []
        parent_pid = multiprocessing.current_process().pid
        self._shutdown = False  # from here on __del__ has queues and workers to clean up
        for worker_id in range(self._num_workers):
            index_queue = ctx.Queue()
            index_queue.cancel_join_thread()  # never block the main process's exit on it
            worker = ctx.Process(
                target=w.worker_loop, daemon=True,
                args=(self._dataset, self._is_iterable, index_queue, self._result_queue,
                      self._done_event, self._auto_collation, self._collate_fn,
                      self._drop_last, self._base_seed, loader.worker_init_fn, worker_id,
                      self._num_workers, parent_pid))
            worker.start()
            self._index_queues.append(index_queue)
            self._workers.append(worker)
        self._start_epoch(first=True)

    def _reset(self, loader):
        super()._reset(loader)
        self._start_epoch(first=False)

    def _start_epoch(self, first):
        self._send_idx = self._rcvd_idx = 0
        self._task_info = {}
        self._workers_status = [True] * self._num_workers
        self._worker_cycle = itertools.cycle(range(self._num_workers))
        if not first:
            # Each worker echoes ResumeIteration after its earlier tasks: drop what comes
            # before the echoes (leftovers of an epoch that was not read to the end).
            for index_queue in self._index_queues:
                index_queue.put(w.ResumeIteration())
            pending = self._num_workers
            while pending:
                idx, _ = self._get_data()
                pending -= isinstance(idx, w.ResumeIteration)
        for _ in range(self._prefetch_factor * self._num_workers):
            self._try_put_index()

    def _try_put_index(self):
        try:
            index = self._next_index()
        except StopIteration:
            return
        for _ in range(self._num_workers):
            worker_id = next(self._worker_cycle)
            if self._workers_status[worker_id]:
                break
        else:  # every worker's stream is exhausted
            return
        self._index_queues[worker_id].put((self._send_idx, index))
        self._task_info[self._send_idx] = (worker_id,)
        self._send_idx += 1

    def _get_data(self):
        """The next `(task_idx, data)` from any worker; checks worker health while waiting."""
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = w.POLL_INTERVAL if deadline is None else min(w.POLL_INTERVAL,
                                                              deadline - time.monotonic())
            try:
                idx, data = self._result_queue.get(timeout=max(wait, 0))
            except queue.Empty:
                self._check_workers()
                if deadline is not None and time.monotonic() >= deadline:
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
                continue
            try:
                # At once, not when its turn comes: the worker must still be alive to hand
                # over its shared memory.
                return idx, w.receive_arrays(data)
            except OSError:  # the worker died before handing it over
                self._check_workers()
                raise

    def _check_workers(self):
        for worker_id, worker in enumerate(self._workers):
            if self._workers_status[worker_id] and not worker.is_alive():
                code = worker.exitcode
                how = f" (killed by signal {signal.Signals(-code).name})" if code < 0 else ""
                self._shutdown_workers()
                raise RuntimeError(f"DataLoader worker (pid {worker.pid}) exited unexpectedly "
                                   f"with exit code {code}{how}")

    def __next__(self):
        while True:
            # Skip tasks sent to workers whose stream ended: they will never answer.
            while self._rcvd_idx < self._send_idx:
                info = self._task_info[self._rcvd_idx]
                if len(info) == 2 or self._workers_status[info[0]]:
                    break
                del self._task_info[self._rcvd_idx]
                self._rcvd_idx += 1
            else:
                if not self._persistent:
                    self._shutdown_workers()
                raise StopIteration
            if len(self._task_info[self._rcvd_idx]) == 2:
                data = self._task_info.pop(self._rcvd_idx)[1]
                self._rcvd_idx += 1
                return self._process(data)
            idx, data = self._get_data()
            if isinstance(data, w.IterableDatasetStopIteration):
                self._workers_status[data.worker_id] = False
                if not self._persistent:
                    self._index_queues[data.worker_id].put(None)
                self._try_put_index()
            elif idx != self._rcvd_idx:
                self._task_info[idx] += (data,)
            else:
                del self._task_info[idx]
                self._rcvd_idx += 1
                return self._process(data)

    def _process(self, data):
        self._try_put_index()
        if isinstance(data, w.ExceptionWrapper):
            data.reraise()
        return data

    def _shutdown_workers(self):
        """Ask workers to exit, wait a little, kill stragglers, close the queues."""
        if getattr(self, "_shutdown", True):
            return
        self._shutdown = True
        self._done_event.set()
        for index_queue in self._index_queues:
            index_queue.put(None)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        for worker in self._workers:
            worker.join(timeout=max(deadline - time.monotonic(), 0))
        for worker in self._workers:
            if worker.is_alive():
                worker.kill()  # stuck: workers ignore the stop signals (data/worker.py)
                worker.join()
        for q in (*self._index_queues, self._result_queue):
            q.cancel_join_thread()
            q.close()

    def __del__(self):
        self._shutdown_workers()
