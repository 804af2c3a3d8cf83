"""`Work` handles with timeouts, and the watchdog report that turns a stuck collective
into an error naming the collective, its sequence number and the ranks that did not join."""
import os
import sys
import time

WATCHDOG_TAG = 0x7D7  # control-communicator tag of watchdog status messages
GRACE_S = 2.0         # how long a timed-out rank listens for the other ranks' status
SPIN = 32             # polls between two looks at the clock in wait()
# wait() looks at a call check once the transfer is done, or earlier when the transfer runs
# this long: it may be a mismatched one that never ends
CHECK_AFTER_S = 1e-3
_crowded = [False]  # see share_cores()


def allowed_cpus():
    """The CPUs this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def share_cores(ranks_on_node, cpus_on_node):
    """Called once the job is known: when its ranks on this node outnumber the CPUs they may
    run on (the union of their affinity masks), a busy poll takes the core from a rank that
    has work to do (measured: 4 ranks on 2 cores ran FSDP 1.6x slower than with yielding
    polls), so from then on every poll of a wait yields the CPU. Returns whether they do."""
    _crowded[0] = ranks_on_node > max(cpus_on_node, 1)
    return _crowded[0]


def crowded():
    """True when waits yield the CPU between polls (see `share_cores`)."""
    return _crowded[0]


class DistTimeoutError(RuntimeError):
    """A collective or transfer did not complete within the process group's timeout."""


class CollectiveMismatchError(RuntimeError):
    """The ranks of a group made different collective calls (see `call_check`)."""


class Work:
    """Handle of an asynchronous operation (`async_op=True`): `wait()`, `is_completed()`.

    A collective completes only once all ranks were found to make the same call; both
    methods raise CollectiveMismatchError when they did not."""

    def __init__(self, group, name, seq, pending, finish=None, check=None):
        self.group, self.name, self.seq = group, name, seq
        self._pending = pending  # None: nothing to transfer (only the check)
        self._finish = finish
        self._check = check
        self._transferred = pending is None
        self._done = False
        self.source = None

    def _progress(self):
        """Drive the transfer, then look at the call check; True once both are through."""
        if not self._transferred:
            self._transferred = self._pending.test()
        return self._transferred and self._checked()

    def _checked(self):
        """Poll the call check (raises on a mismatch); True once it passed."""
        if self._check is not None and self._check.passed():
            self._check = None
        return self._check is None

    def is_completed(self):
        if not self._done and self._progress():
            self._complete()
        return self._done

    def _complete(self):
        if self._pending is not None:
            self._pending.finish()
            self.source = self._pending.source
        if self._finish is not None:
            self._finish()
        self._done = True

    def wait(self, timeout=None):
        """Block until done; past the timeout, report on every waiting rank and raise."""
        if self._done:
            return True
        limit = self.group.timeout if timeout is None else _seconds(timeout)
        start = time.monotonic()
        if not self._transferred:
            self._poll(self._pending.test, start, limit)
            self._transferred = True
        self._poll(self._checked, start, limit)
        self._complete()
        return True

    def _poll(self, test, start, limit):
        """Call `test()` until it is true (MPI progresses only inside tests: busy-poll like
        blocking MPI, yielding the CPU between polls when ranks outnumber cores), with the
        bookkeeping of `_idle` every SPIN polls."""
        pause = os.sched_yield if _crowded[0] else None
        while True:
            for _ in range(SPIN):
                if test():
                    return
                if pause is not None:
                    pause()
            self._idle(start, limit)

    def _idle(self, start, limit):
        """Between two polls: time out, look at the call check of a long transfer, and stop
        burning the core in a long wait."""
        waited = time.monotonic() - start
        if waited > limit:
            raise DistTimeoutError(timeout_report(self.group, self.name, self.seq, limit))
        if waited > CHECK_AFTER_S:
            self._checked()
            if waited > 0.05:
                time.sleep(1e-4)


def _seconds(t):
    return t.total_seconds() if hasattr(t, "total_seconds") else float(t)


def timeout_report(group, name, seq, limit):
    """Exchange status with the other ranks of `group` and describe who is missing."""
    from mpi4py import MPI

    me = group.global_rank
    status = (me, name, seq, group.ranks)
    ctrl = group.control_comm
    others = [r for r in range(ctrl.Get_size()) if r != ctrl.Get_rank()]
    for r in others:
        ctrl.isend(status, dest=r, tag=WATCHDOG_TAG)
    heard = {}
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and len(heard) < len(others):
        if ctrl.Iprobe(source=MPI.ANY_SOURCE, tag=WATCHDOG_TAG):
            msg = ctrl.recv(source=MPI.ANY_SOURCE, tag=WATCHDOG_TAG)
            heard[msg[0]] = msg
        else:
            time.sleep(0.01)
    joined = {me} | {r for r, (_, n, s, g) in heard.items() if (n, s, g) == (name, seq,
                                                                          group.ranks)}
    missing = [r for r in group.ranks if r not in joined]
    elsewhere = [f"rank {r} is waiting in {n} #{s}" for r, (_, n, s, g) in sorted(heard.items())
                 if r in missing]
    silent = [r for r in missing if r not in heard]
    detail = "; ".join(elsewhere + ([f"no answer from rank(s) {silent} (busy outside any "
                                     "collective, or dead)"] if silent else []))
    return (f"dtrain.distributed: collective {name} #{seq} on group {list(group.ranks)} timed "
            f"out after {limit:g} s on rank {me}; rank(s) that did not join: {missing}"
            + (f" ({detail})" if detail else "") + ". Check that every rank calls the same "
            "collectives in the same order.")


def abort_job(message, code=1):
    """Print `message` and end every rank of the job (MPI_Abort)."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
    time.sleep(float(os.environ.get("DTRAIN_ABORT_DELAY_S", "0.5")))  # let peers print too
    from mpi4py import MPI

    MPI.COMM_WORLD.Abort(code)
