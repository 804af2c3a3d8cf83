"""Activation checkpointing inside DDP on real MPI ranks: the averaged gradients equal an
unchecked DDP model's exactly, and each parameter's gradient is accumulated (so its DDP hook
fires) once per backward."""

SCRIPT = r'''
import os
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
from dtrain import nn
from dtrain.utils.checkpoint import checkpoint

dist.init_process_group()
r = dist.get_rank()
dt.set_default_device(os.environ["TEST_DEVICE"])
dt.set_default_dtype(dt.float64)


class Net(nn.Module):
    def __init__(self, ck):
        super().__init__()
        dt.manual_seed(0)
        self.ck = ck
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Dropout(0.3), nn.Linear(12, 6))
            for _ in range(4))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False) if self.ck else b(x)
        return self.head(x)


x = dt.tensor(np.random.default_rng(10 + r).standard_normal((5, 6)))
y = dt.tensor(np.random.default_rng(20 + r).standard_normal((5, 2)))
grads, fired = {}, {}
for ck in (False, True):
    model = dist.DistributedDataParallel(Net(ck), bucket_cap_mb=0.0005)
    assert len(model._buckets) >= 2
    count = fired[ck] = {}
    for name, p in model.module.named_parameters():
        p.register_post_accumulate_grad_hook(
            lambda p, name=name, count=count: count.__setitem__(name, count.get(name, 0) + 1))
    for _ in range(2):  # two steps: the hooks and buckets are reset between passes
        model.zero_grad()
        dt.manual_seed(100 + r)  # rank-dependent dropout, the same draws in both variants
        ((model(x) - y) ** 2).mean().backward()
    grads[ck] = {k: p.grad.cpu().numpy().copy() for k, p in model.module.named_parameters()}

for k in grads[False]:
    np.testing.assert_array_equal(grads[True][k], grads[False][k], err_msg=k)
assert fired[True] == fired[False] == {k: 2 for k in grads[False]}, fired
# the gradients are the ranks' average: rank 0's equal rank 1's
flat = dt.tensor(np.concatenate([g.ravel() for g in grads[True].values()]))
ref = flat.clone()
dist.broadcast(ref, src=0)
np.testing.assert_array_equal(flat.cpu().numpy(), ref.cpu().numpy())
print(f"RANK {r} OK")
'''


def test_checkpointed_model_under_ddp_matches_unchecked(mpirun, device):
    out = mpirun(2, SCRIPT, timeout=180, env={"TEST_DEVICE": device}).stdout
    assert out.count("OK") == 2, out
