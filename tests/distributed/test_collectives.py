"""Collectives on real MPI ranks against NumPy computations of the expected results."""
import pytest

COLLECTIVES = r'''
import numpy as np
import os
DEVICE = os.environ["TEST_DEVICE"]
import dtrain as dt
import dtrain.distributed as dist

dist.init_process_group(backend=None if DEVICE == "cuda" else "mpi")
r, n = dist.get_rank(), dist.get_world_size()
dt.set_default_device(DEVICE)
assert dist.is_initialized() and dist.get_backend() in ("mpi", "nccl")
assert 0 <= dist.get_local_rank() < n

def rank_values(rank, shape, dtype):
    base = np.arange(int(np.prod(shape))).reshape(shape) + 3 * rank + 1
    return (base % 2 == 0) if dtype == bool else base.astype(dtype)

everyone = lambda shape, dtype: [rank_values(k, shape, dtype) for k in range(n)]

for dtype in (np.float32, np.float64, np.int64, np.int32, np.float16, bool):
    for shape in ((5,), (2, 3)):
        vals = everyone(shape, dtype)
        ops = [("sum", dist.ReduceOp.SUM, lambda v: np.sum(v, 0)),
               ("max", dist.ReduceOp.MAX, lambda v: np.max(v, 0)),
               ("min", dist.ReduceOp.MIN, lambda v: np.min(v, 0))]
        if dtype != bool:
            ops.append(("product", dist.ReduceOp.PRODUCT, lambda v: np.prod(v, 0)))
        if dtype in (np.float32, np.float64, np.float16):
            ops.append(("avg", dist.ReduceOp.AVG, lambda v: np.mean(v, 0)))
        for name, op, ref in ops:
            t = dt.tensor(rank_values(r, shape, dtype))
            dist.all_reduce(t, op=op)
            expected = ref(np.stack(vals)).astype(dtype) if dtype != bool else \
                (np.any(np.stack(vals), 0) if name in ("sum", "max") else np.all(np.stack(vals), 0))
            tol = 1e-3 if dtype == np.float16 else 1e-7
            np.testing.assert_allclose(t.cpu().numpy(), expected, rtol=tol,
                                       err_msg=f"all_reduce {name} {dtype} {shape}")
            assert t._data.dtype == np.dtype(dtype)

        t = dt.tensor(rank_values(r, shape, dtype))
        dist.broadcast(t, src=n - 1)
        np.testing.assert_array_equal(t.cpu().numpy(), vals[n - 1])

        out = dt.tensor(np.zeros((n,) + shape, dtype))
        dist.all_gather_into_tensor(out, dt.tensor(vals[r]))
        np.testing.assert_array_equal(out.cpu().numpy(), np.stack(vals))
        outs = [dt.tensor(np.zeros(shape, dtype)) for _ in range(n)]
        dist.all_gather(outs, dt.tensor(vals[r]))
        for k in range(n):
            np.testing.assert_array_equal(outs[k].cpu().numpy(), vals[k])

# reduce to a root; the other ranks keep their values
t = dt.tensor(rank_values(r, (4,), np.float64))
dist.reduce(t, dst=1, op=dist.ReduceOp.SUM)
expected = np.sum(everyone((4,), np.float64), 0) if r == 1 else rank_values(r, (4,), np.float64)
np.testing.assert_array_equal(t.cpu().numpy(), expected)

# reduce_scatter: rank k gets slice k of the sum
full = [rank_values(k, (n * 3,), np.float32) for k in range(n)]
o = dt.zeros(3)
dist.reduce_scatter_tensor(o, dt.tensor(full[r]))
np.testing.assert_allclose(o.cpu().numpy(), np.sum(full, 0)[3 * r:3 * r + 3])

# reduce_scatter with AVG in float64, asynchronously; the counter sees every call's payload
full = [rank_values(k, (n, 2), np.float64) for k in range(n)]
o = dt.zeros(2, dtype=dt.float64)
with dist.CommCounter() as comm:
    dist.reduce_scatter_tensor(o, dt.tensor(full[r]), op=dist.ReduceOp.AVG, async_op=True).wait()
    dist.all_gather_into_tensor(dt.zeros(n * 3), dt.zeros(3))
    dist.all_reduce(dt.zeros(10, dtype=dt.float64))
np.testing.assert_allclose(o.cpu().numpy(), np.mean(full, 0)[r], rtol=1e-15)
assert comm.calls == {"reduce_scatter": 1, "all_gather": 1, "all_reduce": 1}, comm.calls
assert comm.bytes == {"reduce_scatter": 16 * n, "all_gather": 12 * n, "all_reduce": 80}
assert comm.volume() == 16 * n + 12 * n + 160
dist.all_reduce(dt.zeros(1))  # outside the block: not counted
assert comm.calls["all_reduce"] == 1

# uneven parts (dtrain's reduce_scatter_v / all_gather_v; NCCL pads them): rank 1 has none
from dtrain.distributed.collectives import all_gather_v, reduce_scatter_v
counts = [2, 0, 3, 1][:n]
start = sum(counts[:r])
full = [rank_values(k, (sum(counts),), np.float64) for k in range(n)]
for op, ref in ((dist.ReduceOp.SUM, np.sum), (dist.ReduceOp.AVG, np.mean)):
    o = dt.full((counts[r],), -1.0, dtype=dt.float64)
    with dist.CommCounter() as comm:
        reduce_scatter_v(o, dt.tensor(full[r]), counts, op=op)
    np.testing.assert_allclose(o.cpu().numpy(), ref(full, 0)[start:start + counts[r]],
                               rtol=1e-15)
    assert comm.bytes == {"reduce_scatter": 8 * sum(counts)}
for dtype in (np.float16, np.float32, np.int64):
    parts = [rank_values(k, (counts[k],), dtype) for k in range(n)]
    o = dt.tensor(np.zeros(sum(counts), dtype))
    all_gather_v(o, dt.tensor(parts[r]), counts, async_op=True).wait()
    np.testing.assert_array_equal(o.cpu().numpy(), np.concatenate(parts))
for bad, message in (([1] * (n + 1), f"must give {n} element counts"),
                     ([1] * n, f"need a flat tensor of {n} elements")):
    try:
        all_gather_v(dt.zeros(sum(counts)), dt.zeros(counts[r]), bad)
        raise SystemExit("expected an error")
    except ValueError as e:
        assert message in str(e), e

# gather / scatter with a non-default root
g = [dt.zeros(2, 2) for _ in range(n)] if r == 0 else None
dist.gather(dt.full((2, 2), float(r)), g, dst=0)
if r == 0:
    assert [x[0, 0].item() for x in g] == list(range(n))
s = dt.zeros(3)
dist.scatter(s, [dt.full((3,), 10.0 * k) for k in range(n)] if r == n - 1 else None, src=n - 1)
assert s.tolist() == [10.0 * r] * 3

# all_to_all_single with equal splits: rank r sends row block k to rank k
inp = dt.tensor(np.arange(n * 2, dtype=np.float64) + 100 * r)
out = dt.zeros(n * 2, dtype=dt.float64)
dist.all_to_all_single(out, inp)
expected = np.concatenate([np.arange(2 * r, 2 * r + 2) + 100 * k for k in range(n)])
np.testing.assert_array_equal(out.cpu().numpy(), expected)

# non-contiguous tensors are handled (written back into the view)
base = dt.tensor(np.arange(12, dtype=np.float64).reshape(3, 4) * (r + 1))
view = base.T
dist.all_reduce(view)
expected = np.arange(12.0).reshape(3, 4) * sum(range(1, n + 1))
np.testing.assert_array_equal(base.cpu().numpy(), expected)

# async: more in flight than call-check slots, waited in any order
ts = [dt.full((1000,), float(r + k)) for k in range(100)]
works = [dist.all_reduce(t, async_op=True) for t in ts]
for w in reversed(works):
    w.wait()
    assert w.is_completed()
for k, t in enumerate(ts):
    assert t[0].item() == sum(q + k for q in range(n))

# point to point around a ring, blocking and non-blocking
right, left = (r + 1) % n, (r - 1) % n
buf = dt.zeros(3)
reqs = [dist.isend(dt.full((3,), float(r)), dst=right), dist.irecv(buf, src=left)]
for q in reqs:
    q.wait()
assert buf.tolist() == [float(left)] * 3
if r == 0:
    dist.send(dt.tensor([7.0, 8.0]), dst=n - 1, tag=5)
if r == n - 1:
    got = dt.zeros(2)
    assert dist.recv(got, tag=5) == 0 and got.tolist() == [7.0, 8.0]

# groups: ranks given as global ranks; a non-member does nothing
evens = dist.new_group([k for k in range(n) if k % 2 == 0])
t = dt.tensor([float(r)])
dist.all_reduce(t, group=evens)
if r % 2 == 0:
    assert t.item() == sum(k for k in range(n) if k % 2 == 0)
    assert dist.get_rank(evens) == r // 2
else:
    assert t.item() == float(r) and dist.get_rank(evens) == -1

# objects
objs = [None] * n
dist.all_gather_object(objs, {"rank": r, "name": f"r{r}"})
assert objs == [{"rank": k, "name": f"r{k}"} for k in range(n)]
lst = [r, "x"] if r == 0 else [None, None]
dist.broadcast_object_list(lst, src=0)
assert lst == [0, "x"]

dist.barrier()
dist.destroy_process_group()
assert not dist.is_initialized()
print(f"RANK {r} OK")
'''


@pytest.mark.parametrize("n", [2, 3, 4])
def test_collectives_match_numpy(mpirun, n, device):
    out = mpirun(n, COLLECTIVES, timeout=180, env={"TEST_DEVICE": device}).stdout
    assert all(f"RANK {r} OK" in out for r in range(n)), out  # lines of ranks may interleave


def test_init_without_a_launcher_says_what_to_do(tmp_path):
    import subprocess
    import sys
    code = "import dtrain.distributed as d; d.init_process_group()"
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "HYDRA"))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode != 0
    assert "not started by an MPI launcher" in proc.stderr
    assert "dtrain launch --nproc-per-node N script.py" in proc.stderr


def test_init_twice_and_uninitialized_use_are_clear_errors(mpirun):
    out = mpirun(2, r'''
    import os
    import dtrain as dt
    import dtrain.distributed as dist
    try:
        dist.all_reduce(dt.ones(1))
    except RuntimeError as e:
        assert "has not been initialized" in str(e), e
    os.environ["RANK"] = os.environ["PMI_RANK"]  # identities that agree with MPI's are fine
    os.environ["WORLD_SIZE"] = os.environ["PMI_SIZE"]
    dist.init_process_group()
    assert dist.get_rank() == int(os.environ["RANK"])
    try:
        dist.init_process_group()
    except RuntimeError as e:
        assert "twice" in str(e), e
        print("OK")
    ''').stdout
    assert out.count("OK") == 2


@pytest.mark.parametrize("stale", ["RANK=0 WORLD_SIZE=1", "RANK=0 WORLD_SIZE=2"])
def test_stale_rank_variables_fail_on_every_rank(mpirun, stale):
    # e.g. left in the shell by an old torchrun session, then `mpiexec -n 2 python script.py`
    env = dict(kv.split("=") for kv in stale.split())
    proc = mpirun(2, """
    import dtrain.distributed as dist
    dist.init_process_group()
    print("INITIALIZED")
    """, timeout=30, check=False, env=env)
    assert proc.returncode != 0 and "INITIALIZED" not in proc.stdout, proc.stdout
    fix = "unset them or start with dtrain launch"
    assert (f"{stale} from the environment disagree with MPI (rank 1 of 2): {fix}"
            in proc.stderr), proc.stderr
    if env["WORLD_SIZE"] == "1":  # rank 0 disagrees too
        assert f"{stale} from the environment disagree with MPI (rank 0 of 2): {fix}" in \
            proc.stderr
    else:                         # rank 0 agrees, but fails with rank 1 instead of hanging
        assert ("RANK/WORLD_SIZE from the environment disagree with MPI on rank 1 (see the "
                f"error there): {fix}") in proc.stderr, proc.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_waits_yield_the_cpu_only_when_ranks_outnumber_cpus(mpirun, n):
    out = mpirun(n, r'''
import os
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
from dtrain.distributed import work

dist.init_process_group(backend="mpi")
cpus = len(os.sched_getaffinity(0))  # unbound ranks: every mask is the whole machine
assert work.crowded() == (dist.get_local_world_size() > cpus), (work.crowded(), cpus)
t = dt.tensor(np.full(3, dist.get_rank() + 1.0))
dist.all_reduce(t)  # synchronous: MPI's blocking form only when not crowded
assert t.tolist() == [sum(range(1, dist.get_world_size() + 1))] * 3, t.tolist()
dist.destroy_process_group()
assert not work.crowded()
print("OK")
''')
    assert out.stdout.count("OK") == n, out.stdout
