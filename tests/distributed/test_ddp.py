"""DDP on real MPI ranks: N ranks on a split batch == one process on the whole batch."""
import pytest

COMMON = r'''
import os
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
from dtrain.nn import Module, Parameter

dist.init_process_group()
r, n = dist.get_rank(), dist.get_world_size()
dt.set_default_device(os.environ["TEST_DEVICE"])
B = 4  # per-rank batch

class Net(Module):
    def __init__(self, seed=0, unused=False, frozen=False):
        super().__init__()
        g = np.random.default_rng(seed)
        self.w1 = Parameter(dt.tensor(g.standard_normal((5, 8))))
        self.b1 = Parameter(dt.tensor(g.standard_normal(8)))
        self.w2 = Parameter(dt.tensor(g.standard_normal((8, 3))))
        self.register_buffer("scale", dt.tensor([1.0 + seed]))
        if frozen:
            self.w1.requires_grad_(False)
        if unused:
            self.extra = Parameter(dt.tensor(g.standard_normal(4)))

    def forward(self, x):
        return ((x @ self.w1 + self.b1).tanh() @ self.w2) * self.scale

def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).mean()

dt.set_default_dtype(dt.float64)
data = np.random.default_rng(1).standard_normal((B * n, 5))
target = np.random.default_rng(2).standard_normal((B * n, 3))

def sgd(model, lr=0.1):
    with dt.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.data -= lr * p.grad.data

def params(model):
    return {k: v.cpu().numpy().copy() for k, v in model.state_dict().items()}

def check_same(a, b, rtol=1e-10):
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-12, err_msg=k)
'''

EQUIVALENCE = COMMON + r'''
for kwargs in ({}, {"frozen": True}, {"unused": True}):
    ref = Net(**kwargs)
    for _ in range(3):
        for p in ref.parameters():
            p.grad = None
        loss_fn(ref, dt.tensor(data), dt.tensor(target)).backward()
        sgd(ref)
    # rank-dependent initial weights: DDP must broadcast rank 0's at construction
    model = dist.DistributedDataParallel(Net(seed=r, **kwargs) if r else Net(**kwargs),
                                         bucket_cap_mb=0.0001,
                                         find_unused_parameters=bool(kwargs.get("unused")))
    assert len(model._buckets) >= 2 or n == 1
    mine = slice(r * B, (r + 1) * B)
    for _ in range(3):
        model.zero_grad()
        loss_fn(model, dt.tensor(data[mine]), dt.tensor(target[mine])).backward()
        sgd(model)
    check_same(params(ref), params(model.module))
    assert list(model.state_dict())[0].startswith("module.")
    if kwargs.get("unused"):
        assert model.module.extra.grad is None
    if kwargs.get("frozen"):
        assert model.module.w1.grad is None

# no_sync: accumulate two micro-batches locally, reduce once
ref = Net()
half = B // 2
loss_fn(ref, dt.tensor(data), dt.tensor(target)).backward()
model = dist.DistributedDataParallel(Net(), bucket_cap_mb=0.0001)
mine = np.arange(r * B, (r + 1) * B)
with model.no_sync():
    (loss_fn(model, dt.tensor(data[mine[:half]]), dt.tensor(target[mine[:half]])) / 2).backward()
local_only = model.module.w2.grad.cpu().numpy().copy()
(loss_fn(model, dt.tensor(data[mine[half:]]), dt.tensor(target[mine[half:]])) / 2).backward()
for (k, p), q in zip(ref.named_parameters(), model.module.parameters()):
    np.testing.assert_allclose(q.grad.cpu().numpy(), p.grad.cpu().numpy(), rtol=1e-10, err_msg=k)
if n > 1:
    assert not np.allclose(local_only * 2, ref.w2.grad.cpu().numpy())
print(f"RANK {r} OK")
'''


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ddp_equals_single_process_training(mpirun, n, device):
    out = mpirun(n, EQUIVALENCE, timeout=180, env={"TEST_DEVICE": device}).stdout
    assert out.count("OK") == n, out


ERRORS = COMMON + r'''
# a parameter without gradient and find_unused_parameters=False
model = dist.DistributedDataParallel(Net(unused=True))
try:
    loss_fn(model, dt.tensor(data[:B]), dt.tensor(target[:B])).backward()
    raise SystemExit("expected an error")
except RuntimeError as e:
    assert "['extra'] received no gradient" in str(e) and "find_unused_parameters=True" in str(e)

# ranks with different models
try:
    dist.DistributedDataParallel(Net(unused=(r == 1)))
    raise SystemExit("expected an error")
except RuntimeError as e:
    assert "the ranks' models differ" in str(e) and "parameter 'extra' is" in str(e), str(e)

# fp16 compression hook: close to the exact average
model = dist.DistributedDataParallel(Net())
model.register_comm_hook(model.process_group,
                         dist.comm_hooks.fp16_compress_hook)
exact = dist.DistributedDataParallel(Net())
mine = slice(r * B, (r + 1) * B)
for m in (model, exact):
    loss_fn(m, dt.tensor(data[mine]), dt.tensor(target[mine])).backward()
for p, q in zip(model.module.parameters(), exact.module.parameters()):
    np.testing.assert_allclose(p.grad.cpu().numpy(), q.grad.cpu().numpy(), rtol=2e-2, atol=2e-3)
print(f"RANK {r} OK")
'''


def test_ddp_errors_and_comm_hook(mpirun, device):
    out = mpirun(2, ERRORS, timeout=120, env={"TEST_DEVICE": device}).stdout
    assert out.count("OK") == 2, out
