"""`dt.multiprocessing`, as `torch.multiprocessing`: the standard library's multiprocessing
(re-exported, not copied) plus `spawn`, which runs `fn(i, *args)` in `nprocs` processes and
re-raises a child's exception in the parent with the child's traceback.

Registered as the module `dtrain.multiprocessing` by the package (see dtrain/__init__.py).
It starts plain processes: for distributed training they still need an MPI launcher to find
each other, so `dtrain launch --nproc-per-node N script.py` is the way to start ranks.
"""
import multiprocessing
import multiprocessing.connection
import signal
import sys
import traceback
from multiprocessing import *  # noqa: F401,F403


class ProcessRaisedException(Exception):
    """A spawned process raised; the message holds its traceback."""

    def __init__(self, msg, error_index, error_pid):
        super().__init__(msg)
        self.error_index, self.pid = error_index, error_pid


class ProcessExitedException(Exception):
    """A spawned process ended with a non-zero exit code or a signal without raising."""

    def __init__(self, msg, error_index, error_pid, exit_code, signal_name=None):
        super().__init__(msg)
        self.error_index, self.pid = error_index, error_pid
        self.exit_code, self.signal_name = exit_code, signal_name


def _run(fn, i, args, error_queue):
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass  # the parent is ending the processes
    except Exception:
        error_queue.put(traceback.format_exc())
        sys.exit(1)


class ProcessContext:
    """The processes `spawn(..., join=False)` started; `join()` waits for them."""

    def __init__(self, processes, error_queues):
        self.processes, self.error_queues = processes, error_queues

    def pids(self):
        return [p.pid for p in self.processes]

    def join(self, timeout=None):
        """True once every process ended well, False while some still run (after `timeout`
        seconds). The first process to fail ends the others and its error is raised."""
        running = [p.sentinel for p in self.processes if p.exitcode is None]
        if running:
            multiprocessing.connection.wait(running, timeout=timeout)
        failed = next((i for i, p in enumerate(self.processes)
                       if p.exitcode is not None and p.exitcode != 0), None)
        if failed is None:
            return all(p.exitcode == 0 for p in self.processes)
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        process, queue = self.processes[failed], self.error_queues[failed]
        if queue.empty():
            code = process.exitcode
            if code < 0:
                name = signal.Signals(-code).name
                raise ProcessExitedException(f"process {failed} terminated with signal {name}",
                                             failed, process.pid, code, name)
            raise ProcessExitedException(f"process {failed} terminated with exit code {code}",
                                         failed, process.pid, code)
        raise ProcessRaisedException(f"\n\n-- Process {failed} terminated with the following "
                                     f"error:\n{queue.get()}", failed, process.pid)


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """Run `fn(i, *args)` for i in range(nprocs), each in a new process.

    With `join` (default) waits for all and returns None, or raises `ProcessRaisedException`
    (naming the failing process, with its traceback) or `ProcessExitedException`; otherwise
    returns the `ProcessContext`. `fn` must be picklable (defined at a module's top level).
    """
    ctx = multiprocessing.get_context(start_method)
    processes, error_queues = [], []
    for i in range(nprocs):
        queue = ctx.SimpleQueue()
        process = ctx.Process(target=_run, args=(fn, i, args, queue), daemon=daemon)
        process.start()
        processes.append(process)
        error_queues.append(queue)
    context = ProcessContext(processes, error_queues)
    if not join:
        return context
    while not context.join():
        pass
