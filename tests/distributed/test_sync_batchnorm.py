"""SyncBatchNorm on real ranks equals BatchNorm on the whole batch in one process."""

SYNC_BN = r'''
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
from dtrain import nn

dist.init_process_group()
r, n = dist.get_rank(), dist.get_world_size()
dt.set_default_dtype(dt.float64)
B = 3
g = np.random.default_rng(0)
x_all = g.standard_normal((B * n, 4, 5)) * 3 + 1
y_all = g.standard_normal((B * n, 4, 5))

def make():
    dt.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.BatchNorm1d(4), nn.Tanh(),
                         nn.Conv1d(4, 4, 1))

def train(model, x, y, steps=3):
    opt = dt.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        ((model(dt.tensor(x)) - dt.tensor(y)) ** 2).mean().backward()
        opt.step()
    return model

ref = train(make(), x_all, y_all)
sync = nn.SyncBatchNorm.convert_sync_batchnorm(make())
assert isinstance(sync[1], nn.SyncBatchNorm)
model = dist.DistributedDataParallel(sync)
mine = slice(r * B, (r + 1) * B)
train(model, x_all[mine], y_all[mine])
for (k, a), b in zip(ref.state_dict().items(), sync.state_dict().values()):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
sync.eval()
np.testing.assert_allclose(sync(dt.tensor(x_all)).detach().numpy(),
                           ref.eval()(dt.tensor(x_all)).detach().numpy(), rtol=1e-10)
print(f"RANK {r} OK")
'''


def test_sync_batchnorm_matches_global_batchnorm(mpirun):
    for n in (2, 3):
        out = mpirun(n, SYNC_BN, timeout=120).stdout
        assert out.count("OK") == n, out
