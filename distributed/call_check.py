"""The always-on check that every rank of a group makes the same collective call.

Each collective starts, just before the operation itself, a non-blocking MAX all-reduce of
[h, -h] on the group's control communicator, where h is a 63-bit hash of the call: the
collective, its op and root, and each tensor's dtype and shape. (The all-reduces are
persistent MPI 4 requests, reused: cheaper to start than an Iallreduce per call.) Every
rank then holds [max h, -min h], so all of them learn at once whether the ranks agree. `Work`
tests the check inside its completion loop, so for large messages its latency hides behind
the payload; an operation completes only once its check and those of all earlier calls on
the group have passed, so the result of a mismatched call is never handed back.

On a mismatch every rank exchanges its readable description of the call over the control
communicator and raises `CollectiveMismatchError` naming the collective, its sequence
number and what each rank passed. The group is unusable afterwards: the mismatched
transfer may still be in flight, or stuck (NCCL communicators are aborted).

With DTRAIN_DISTRIBUTED_DEBUG=1 the call site (file:line outside dtrain.distributed) is part
of the call, so ranks that reach collectives of the same shape from different lines (e.g.
gradients reduced in a different order) are reported too.
"""
import array
import functools
import os
import sys
import zlib

import numpy as np

from dtrain.distributed.work import CollectiveMismatchError, Work

REPORT_BYTES = 512  # per-rank description width in the mismatch report
SLOTS = 64          # checks in flight per group before a new call waits for the oldest
FAST_POLLS = 256    # bare polls of a lone check before wait() takes the timed path
REPORT_TAG = 0x7D8  # control-communicator tag of mismatch reports (the watchdog's is 0x7D7)
_HERE = os.path.dirname(os.path.abspath(__file__))
_CODES = {}


@functools.cache
def _mpi():
    from mpi4py import MPI  # imported on first use: dtrain.distributed imports without it

    return MPI


def _code(text):
    """A stable int for `text` (hash() of a str is salted per process, so ranks differ)."""
    code = _CODES.get(text)
    if code is None:
        code = _CODES[text] = zlib.crc32(text.encode())
    return code


class CallCheck:
    """One posted check: `passed()` polls it (and the group's earlier ones, in order)."""

    __slots__ = ("group", "seq", "name", "fields", "hash", "buf", "request")

    def __init__(self, group, seq, name, fields):
        codes = _CODES
        key = [codes.get(name) or _code(name)]
        for f in fields:  # strings ("op=sum", "src=0") or arrays (dtype and shape)
            key.append((codes.get(f) or _code(f)) if type(f) is str else (f.dtype.num, f.shape))
        h = hash(tuple(key)) & (2 ** 63 - 1)  # ints and tuples hash alike on every rank
        # The persistent request (MPI 4; cheaper to start than Iallreduce) of slot
        # (seq - 1) % SLOTS, so that every rank starts the same requests in the same order:
        # the first SLOTS calls create the slots, a later one reuses that of call seq - SLOTS
        # once its check has passed.
        slots, i = group.check_slots, (seq - 1) % SLOTS
        if i == len(slots):
            slots.append(_new_slot(group.control_comm))
        elif group.unverified and group.unverified[0].seq <= seq - SLOTS:
            old = group.unverified[seq - SLOTS - group.unverified[0].seq]  # seqs are dense
            Work(group, old.name, old.seq, None, None, old).wait()
        buf, request = slots[i]
        buf[0], buf[1] = h, -h
        request.Start()
        self.group, self.seq, self.name, self.fields = group, seq, name, fields
        self.hash, self.buf, self.request = h, buf, request
        group.unverified.append(self)

    def wait(self):
        """Block until this call passed on every rank (raises on a mismatch, or past the
        group's timeout with the watchdog's report). NOTE: when it is the only check in
        flight, its request is first polled in a bare loop: the usual case of a synchronous
        call, where the Work machinery cost more than the tiny all-reduce itself."""
        queue = self.group.unverified
        if len(queue) == 1 and self.group.broken is None:
            test = self.request.Test
            for _ in range(FAST_POLLS):
                if test():
                    self._settle()
                    return
        Work(self.group, self.name, self.seq, None, None, self).wait()

    def passed(self):
        """True once this call and all earlier ones on the group agree on every rank;
        False while checks are in flight; raises CollectiveMismatchError on a mismatch."""
        group = self.group
        if group.broken is not None:
            raise CollectiveMismatchError(group.broken)
        queue = group.unverified
        while queue and queue[0].seq <= self.seq:
            head = queue[0]
            if not head.request.Test():
                return False
            head._settle()
        return True

    def _settle(self):
        """This check, the oldest in flight, has completed: leave the queue, and raise
        when the ranks' hashes differ (the MAX of [h, -h] is [h, -h] only if all agree)."""
        self.group.unverified.popleft()
        if self.buf[0] != self.hash or self.buf[1] != -self.hash:
            self._fail()

    def _fail(self):
        """Send every other rank this rank's description of the call, break the group, and
        raise. Point to point: ranks may have started different numbers of later checks, so
        a collective on the control communicator could pair up wrongly."""
        from dtrain.distributed.mpi_comm import MPIPending

        group, ctrl, me = self.group, self.group.control_comm, self.group.rank()
        mine = "\x1f".join([self.name] + [render(f) for f in self.fields]).encode()
        rows = np.zeros((group.size(), REPORT_BYTES), dtype=np.uint8)
        rows[me, :min(len(mine), REPORT_BYTES)] = np.frombuffer(mine[:REPORT_BYTES], np.uint8)
        peers = [r for r in range(group.size()) if r != me]
        sends = [ctrl.Isend(rows[me], dest=r, tag=REPORT_TAG) for r in peers]
        for r in peers:
            Work(group, f"mismatch report of {self.name}", self.seq,
                 MPIPending(ctrl.Irecv(rows[r], source=r, tag=REPORT_TAG), [])).wait()
        _mpi().Request.Waitall(sends)
        calls = [bytes(r).rstrip(b"\0").decode(errors="replace").split("\x1f") for r in rows]
        group.broken = mismatch_message(self.seq, calls, group.ranks, group.is_world)
        group.abort_transfers()
        raise CollectiveMismatchError(group.broken)


def begin(group, name, fields):
    """Number a collective call on `group` and post its check (None on a 1-rank group)."""
    if group.broken is not None:
        raise CollectiveMismatchError(f"the process group is unusable after an earlier "
                                      f"error: {group.broken}")
    group.seq = seq = group.seq + 1
    if len(group.ranks) == 1:
        return None
    if group.debug:
        fields = fields + (f"at {_call_site()}",)
    return CallCheck(group, seq, name, fields)


def _new_slot(comm):
    """An int64 pair and a persistent MAX all-reduce of it on `comm`."""
    MPI = _mpi()
    buf = array.array("q", [0, 0])  # cheaper to set and read than a NumPy array
    try:
        return buf, comm.Allreduce_init(MPI.IN_PLACE, buf, op=MPI.MAX)
    except NotImplementedError:  # an MPI library older than MPI 4
        return buf, _Reposted(comm, buf)


class _Reposted:
    """A persistent request's stand-in: each Start() posts a new Iallreduce."""

    def __init__(self, comm, buf):
        self.comm, self.buf, self.request = comm, buf, None

    def Start(self):
        MPI = _mpi()
        self.request = self.comm.Iallreduce(MPI.IN_PLACE, self.buf, op=MPI.MAX)

    def Test(self):
        return self.request.Test()

    def Free(self):
        """Nothing to release: each Iallreduce was completed by Test()."""


def render(field):
    """A field as the mismatch report shows it: "op=sum", "float32[4]"."""
    return field if type(field) is str else f"{field.dtype.name}{list(field.shape)}"


def _call_site():
    frame = sys._getframe(2)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == _HERE:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def mismatch_message(seq, calls, ranks, is_world):
    """"all_reduce #7: ranks disagree: rank 0 float32[4], rank 1 float32[6]; ..." from each
    rank's [name, field, ...]; when the names agree only the differing fields are shown."""
    names = {c[0] for c in calls}
    if len(names) == 1:
        head = calls[0][0]
        width = max(len(c) for c in calls)
        padded = [c + [""] * (width - len(c)) for c in calls]
        differ = [i for i in range(1, width) if len({c[i] for c in padded}) > 1] or \
            range(1, width)  # same text, different hash: e.g. dtypes of another platform
        texts = [" ".join(c[i] for i in differ if c[i]) for c in padded]
    else:
        head = "collective"
        texts = [f"{c[0]}({', '.join(c[1:])})" for c in calls]
    by_text = {}
    for rank, text in zip(ranks, texts):
        by_text.setdefault(text, []).append(rank)
    who = ", ".join(f"{rank_list(rs)} {text}" for text, rs in by_text.items())
    where = "" if is_world else f" on group {list(ranks)}"
    return (f"{head} #{seq}{where}: ranks disagree: {who}; every rank must make the same "
            "collective calls in the same order, with the same op, root, dtype and shape")


def rank_list(ranks):
    """"rank 3" or "ranks 0-2,5"."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    runs = [[ranks[0], ranks[0]]]
    for r in ranks[1:]:
        if r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return "ranks " + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
