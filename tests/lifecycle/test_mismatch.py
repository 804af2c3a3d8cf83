"""A mismatched collective under `dtrain launch` is an error on every rank, by default
(issue 11, item 8): today rank 1 got [2, 2, 2, 2, 1, 1] and the job exited 0."""

SCRIPT = """
import dtrain as dt
import dtrain.distributed as dist
dist.init_process_group()
t = dt.ones(4 if dist.get_rank() == 0 else 6)
dist.all_reduce(t)
print("rank", dist.get_rank(), "got", t.tolist())
"""


def test_all_reduce_of_different_shapes_fails_on_every_rank(dtrain_cli, tmp_path):
    (tmp_path / "mismatch.py").write_text(SCRIPT)
    proc = dtrain_cli("launch", "--nproc-per-node", "2", "mismatch.py", timeout=60)
    assert proc.returncode == 1, proc.stderr
    message = ("CollectiveMismatchError: all_reduce #1: ranks disagree: rank 0 float32[4], "
               "rank 1 float32[6]")
    for rank in (0, 1):
        assert f"[rank {rank}] dtrain.distributed.work.{message}" in proc.stderr, proc.stderr
    assert "got" not in proc.stdout
