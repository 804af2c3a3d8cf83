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


def test_debug_mode_reports_the_first_mismatched_collective(mpirun):
    proc = mpirun(2, r'''
    import dtrain as dt
    import dtrain.distributed as dist
    dist.init_process_group(timeout=20)
    r = dist.get_rank()
    dist.all_reduce(dt.ones(3))
    dist.all_reduce(dt.ones(3 + r))      # shapes differ on the second call
    ''', timeout=60, check=False, env={"DTRAIN_DISTRIBUTED_DEBUG": "1"})
    assert proc.returncode != 0
    assert "ranks disagree on collective #2" in proc.stderr
    assert "rank 0: #2 all_reduce[sum](float32[3])" in proc.stderr
    assert "rank 1: #2 all_reduce[sum](float32[4])" in proc.stderr


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
