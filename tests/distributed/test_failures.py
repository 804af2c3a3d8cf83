"""Hangs and crashes end the job with a report instead of hanging (outer timeouts guard)."""

SKIP_COLLECTIVE = r'''
import time
import dtrain as dt
import dtrain.distributed as dist
dist.init_process_group(timeout=2)
r = dist.get_rank()
t = dt.ones(4)
dist.all_reduce(t)                      # collective #1: everyone
if r == 1:
    time.sleep(60)                      # rank 1 never joins collective #2
dist.all_reduce(t)
print("UNREACHABLE")
'''


def test_a_rank_that_skips_a_collective_ends_the_job_with_a_report(mpirun):
    # The outer timeout is the bound: a 2 s collective timeout, a 2 s status exchange and
    # the abort must end the job well inside it (without the watchdog it would hang).
    proc = mpirun(3, SKIP_COLLECTIVE, timeout=25, check=False)
    assert proc.returncode != 0 and "UNREACHABLE" not in proc.stdout
    err = proc.stderr
    for rank in (0, 2):  # every rank that waited reports, naming collective, number, missing
        assert (f"collective all_reduce #2 on group [0, 1, 2] timed out after 2 s on rank "
                f"{rank}; rank(s) that did not join: [1]") in err, err
    assert "no answer from rank(s) [1]" in err


def test_mismatched_shapes_raise_on_every_rank_and_end_the_job(mpirun):
    # The default 30 min group timeout is in force: only the call check can end this job
    # inside the outer timeout (without it rank 1 returned [2, 2, 2, 2, 1, 1] and exit 0).
    proc = mpirun(2, r"""
    import dtrain as dt
    import dtrain.distributed as dist
    dist.init_process_group()
    r = dist.get_rank()
    t = dt.ones(4)
    for _ in range(6):
        dist.all_reduce(t)
    assert t.tolist() == [64.0] * 4
    out = dt.ones(4 + 2 * r)
    dist.all_reduce(out)                 # collective #7: 4 elements on rank 0, 6 on rank 1
    print("RETURNED", out.tolist())
    """, timeout=30, check=False)
    assert proc.returncode != 0 and "RETURNED" not in proc.stdout, proc.stdout
    message = "all_reduce #7: ranks disagree: rank 0 float32[4], rank 1 float32[6]"
    for rank in (0, 1):
        assert f"[rank {rank}] uncaught exception, aborting the job" in proc.stderr, proc.stderr
    assert proc.stderr.count(f"CollectiveMismatchError: {message}; every rank must make the "
                             "same collective calls in the same order") == 2, proc.stderr


MISMATCHES = r"""
from mpi4py import MPI
import dtrain as dt
import dtrain.distributed as dist
from dtrain.distributed import CollectiveMismatchError, ReduceOp

dist.init_process_group(timeout=20)
r = dist.get_rank()
TAIL = ("; every rank must make the same collective calls in the same order, with the same "
        "op, root, dtype and shape")

def expect(message, call):
    g = dist.new_group([0, 1, 2])        # each case breaks its own group
    try:
        call(g)
    except CollectiveMismatchError as e:
        assert str(e) == message + TAIL, str(e)
    else:
        raise AssertionError("no error for: " + message)
    try:                                 # the group stays unusable
        dist.barrier(group=g)
        raise AssertionError("a broken group was used")
    except CollectiveMismatchError as e:
        assert "unusable after an earlier error: " + message in str(e), str(e)

ON = "#1 on group [0, 1, 2]: ranks disagree: "
expect("all_reduce " + ON + "ranks 0,2 float32[4], rank 1 float64[4]",
       lambda g: dist.all_reduce(dt.ones(4, dtype=dt.float64 if r == 1 else dt.float32),
                                 group=g))
expect("all_reduce " + ON + "ranks 0-1 op=sum, rank 2 op=max",
       lambda g: dist.all_reduce(dt.ones(4), op=ReduceOp.MAX if r == 2 else ReduceOp.SUM,
                                 group=g))
expect("broadcast " + ON + "rank 0 src=0, ranks 1-2 src=1",
       lambda g: dist.broadcast(dt.ones(4), src=min(r, 1), group=g))
expect("collective " + ON + "rank 0 all_reduce(op=sum, float32[4]), ranks 1-2 "
       "broadcast(src=0, float32[4])",
       lambda g: dist.all_reduce(dt.ones(4), group=g) if r == 0 else
       dist.broadcast(dt.ones(4), src=0, group=g))
expect("collective " + ON + "ranks 0-1 all_gather_object(), rank 2 "
       "broadcast_object_list(src=0, 1 objects)",
       lambda g: dist.all_gather_object([None] * 3, r, group=g) if r < 2 else
       dist.broadcast_object_list([r], src=0, group=g))

def async_mismatch(g):                   # the error comes at wait(), never a result
    t = dt.ones(3 + (r == 1))
    work = dist.all_reduce(t, group=g, async_op=True)
    version = t._version[0]
    try:
        if r == 0:                       # a later call is waited first: it reports #1
            dist.all_reduce(dt.ones(2), group=g, async_op=True).wait()
        work.wait()
    finally:
        assert t._version[0] == version
expect("all_reduce " + ON + "ranks 0,2 float32[3], rank 1 float32[4]", async_mismatch)

t = dt.ones(2)                           # the default group is untouched
dist.all_reduce(t)
assert t.tolist() == [3.0, 3.0]

class OldMPI(MPI.Intracomm):             # a library before MPI 4: no persistent collectives
    def Allreduce_init(self, *args, **kwargs):
        raise NotImplementedError("MPI_Allreduce_init")

def on_old_mpi(call):
    def run(g):
        g.control_comm = OldMPI(g.control_comm)
        t = dt.full((3,), float(r))
        dist.all_reduce(t, group=g)
        assert t.tolist() == [3.0] * 3
        call(g)
    return run
expect("all_reduce #2 on group [0, 1, 2]: ranks disagree: ranks 0,2 float32[2], rank 1 "
       "float32[3]", on_old_mpi(lambda g: dist.all_reduce(dt.ones(2 + (r == 1)), group=g)))

if r == 0:                               # a receive checks what arrived
    dist.send(dt.ones(4), dst=1)
elif r == 1:
    try:
        dist.recv(dt.zeros(6), src=0)
        raise AssertionError("a short message was accepted")
    except RuntimeError as e:
        assert str(e) == ("recv: the message from rank 0 has 16 bytes but the tensor "
                          "float32[6] has 24; send and recv must use tensors of the same "
                          "dtype and shape"), str(e)
print(f"RANK {r} OK")
"""


def test_mismatched_collectives_raise_on_every_rank(mpirun):
    out = mpirun(3, MISMATCHES, timeout=60).stdout
    assert all(f"RANK {r} OK" in out for r in range(3)), out


def test_debug_mode_also_checks_call_sites(mpirun):
    proc = mpirun(2, r"""
    import dtrain as dt
    import dtrain.distributed as dist
    dist.init_process_group()
    if dist.get_rank() == 0:
        dist.all_reduce(dt.ones(3))      # the same call as rank 1's, from another line
    else:
        dist.all_reduce(dt.ones(3))
    """, timeout=30, check=False, env={"DTRAIN_DISTRIBUTED_DEBUG": "1"})
    assert proc.returncode != 0
    assert ("all_reduce #1: ranks disagree: rank 0 at rank_script.py:6, rank 1 at "
            "rank_script.py:8;") in proc.stderr, proc.stderr


def test_a_crashing_rank_ends_the_whole_job_with_its_traceback(mpirun):
    proc = mpirun(2, r'''
    import time
    import dtrain as dt
    import dtrain.distributed as dist
    dist.init_process_group()
    if dist.get_rank() == 1:
        raise ValueError("boom on rank 1")
    dist.all_reduce(dt.ones(2))          # rank 0 would wait forever without the abort
    time.sleep(60)
    ''', timeout=20, check=False)   # rank 0 would sleep 60 s without the abort
    assert proc.returncode != 0
    assert "[rank 1] uncaught exception, aborting the job" in proc.stderr
    assert 'raise ValueError("boom on rank 1")' in proc.stderr
