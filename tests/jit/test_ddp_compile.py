"""Compiled DDP training steps on 2 real MPI ranks (MSE, and cross-entropy on labels that
change every step; gradient accumulation under no_sync): DDP's gradient hooks (bucket copy,
asynchronous all-reduce, the end-of-backward wait) fire in every replay, and the result
equals one process training on the whole batch."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = r'''
import contextlib

import numpy as np
import dtrain as dt
import dtrain.distributed as dist
from dtrain import nn

dist.init_process_group()
r, n = dist.get_rank(), dist.get_world_size()
dt.set_default_dtype(dt.float64)
B = 4
data = np.random.default_rng(1).standard_normal((6, B * n, 5))
target = np.random.default_rng(2).standard_normal((6, B * n, 3))
labels = np.random.default_rng(3).integers(0, 3, (6, B * n))


def net():
    dt.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def make_step(model, loss_fn):
    opt = dt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        model.zero_grad()  # Module.zero_grad: replayed as an effect, as opt.step()
        loss_fn(model(x), y).backward()
        opt.step()
    return step


for loss_fn, ys in ((nn.functional.mse_loss, target), (nn.functional.cross_entropy, labels)):
    ref = net()
    ref_step = make_step(ref, loss_fn)
    for x, y in zip(data, ys):
        ref_step(dt.tensor(x), dt.tensor(y))

    ddp = dist.DistributedDataParallel(net())
    step = dt.compile(make_step(ddp, loss_fn))
    for x, y in zip(data, ys):
        step(dt.tensor(x[r * B:(r + 1) * B]), dt.tensor(y[r * B:(r + 1) * B]))
    graph, = step.graphs
    kinds = [node.kind for node in graph.nodes]
    assert kinds.count("callbacks") == 1 and kinds.count("accumulate") == 4, kinds
    for p, q in zip(ref.parameters(), ddp.module.parameters()):
        np.testing.assert_allclose(q._data, p._data, rtol=1e-10, atol=1e-12)

# Gradient accumulation: two micro-batches per step, the first under no_sync (no
# communication), as users write it; the switch is an effect that every replay repeats.
K = 2
ref = net()
ref_opt = dt.optim.Adam(ref.parameters(), lr=0.05)
ddp = dist.DistributedDataParallel(net())
opt = dt.optim.Adam(ddp.parameters(), lr=0.05)


def accumulate(x, y):
    opt.zero_grad()
    for k in range(K):
        with ddp.no_sync() if k < K - 1 else contextlib.nullcontext():
            loss = nn.functional.cross_entropy(ddp(x[k * B:(k + 1) * B]), y[k * B:(k + 1) * B])
            (loss / K).backward()
    opt.step()


step = dt.compile(accumulate)
xs = np.random.default_rng(4).standard_normal((6, K * B * n, 5))
ys = np.random.default_rng(5).integers(0, 3, (6, K * B * n))
for x, y in zip(xs, ys):
    ref_opt.zero_grad()
    nn.functional.cross_entropy(ref(dt.tensor(x)), dt.tensor(y)).backward()
    ref_opt.step()
    mine = np.concatenate([np.arange(k * B * n + r * B, k * B * n + (r + 1) * B)
                           for k in range(K)])  # micro-batch k: this rank's B of its k-th part
    step(dt.tensor(x[mine]), dt.tensor(y[mine]))
assert len(step.graphs) == 1 and ddp.require_backward_grad_sync
for p, q in zip(ref.parameters(), ddp.module.parameters()):
    np.testing.assert_allclose(q._data, p._data, rtol=1e-10, atol=1e-12)
import sys
sys.stdout.write(f"<rank {r} ok>\n")
'''


def test_compiled_ddp_step_matches_one_process(tmp_path):
    exe = Path(sys.executable).parent / "mpiexec"
    exe = str(exe) if exe.exists() else shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpiexec not found (pip install dtrain[mpi])")
    script = tmp_path / "ddp_compile.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run([exe, "-n", "2", sys.executable, str(script)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<rank 0 ok>" in proc.stdout and "<rank 1 ok>" in proc.stdout
