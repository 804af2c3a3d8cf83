"""fully_shard (FSDP2: ZeRO-3, and ZeRO-2 without resharding after forward) on real MPI ranks:
N ranks on a split batch equal one process on the whole batch, in float64."""
import pytest

COMMON = r'''
import os
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
from dtrain import nn
from dtrain.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from dtrain.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, memory_stats

dist.init_process_group(backend=None if os.environ.get("TEST_DEVICE") == "cuda" else "mpi")
r, n = dist.get_rank(), dist.get_world_size()
dt.set_default_device(os.environ.get("TEST_DEVICE", "cpu"))
dt.set_default_dtype(dt.float64)
B, K = 3, 3  # per-rank batch, steps
FULL = StateDictOptions(full_state_dict=True)

class Block(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.lin(x).tanh()

class Net(nn.Module):
    """Uneven rows (7x3 on 4 ranks), a frozen bias, and a weight tied inside the root unit
    (`proj.weight` is also the root's `unproj`)."""
    def __init__(self):
        super().__init__()
        dt.manual_seed(0)
        self.proj = nn.Linear(4, 3, bias=False)
        self.b1 = Block(3, 7)
        self.b2 = Block(7, 5)
        self.head = nn.Linear(5, 3)
        self.unproj = self.proj.weight
        self.b2.lin.bias.requires_grad_(False)

    def forward(self, x):
        h = self.head(self.b2(self.b1(self.proj(x))))
        return h @ self.unproj

def shard(model, **kw):
    for block in (model.b1, model.b2):
        fully_shard(block, **kw)
    return fully_shard(model, **kw)

def batch(k, rows):
    g = np.random.default_rng(100 + k)
    x, y = g.standard_normal((B * n, 4)), g.standard_normal((B * n, 4))
    return dt.tensor(x[rows]), dt.tensor(y[rows])

def loss_fn(model, k, rows):
    x, y = batch(k, rows)
    return ((model(x) - y) ** 2).mean()

def train(model, opt, steps, rows):
    losses = []
    for k in steps:
        opt.zero_grad()
        loss = loss_fn(model, k, rows)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses

def global_mean(values):
    t = dt.tensor(values)
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    return t.tolist()

def close(a, b, what, rtol=1e-10):
    a, b = (x.detach().cpu().numpy() if isinstance(x, dt.Tensor) else np.asarray(x)
            for x in (a, b))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-14, err_msg=what)

mine = slice(r * B, (r + 1) * B)
'''

PARITY = COMMON + r'''
for cls, kw in ((dt.optim.SGD, dict(lr=0.1, momentum=0.9)), (dt.optim.Adam, dict(lr=0.01))):
    ref = Net()
    ref_losses = train(ref, cls(ref.parameters(), **kw), range(K), slice(None))
    for reshard in (True, False):
        model = shard(Net(), reshard_after_forward=reshard)
        assert isinstance(model, FSDPModule) and type(model).__name__ == "FSDPNet"
        opt = cls(model.parameters(), **kw)
        losses = global_mean(train(model, opt, range(K), mine))
        what = f"{cls.__name__} reshard_after_forward={reshard}"
        close(losses, ref_losses, "losses " + what)
        full = get_model_state_dict(model, options=FULL)
        assert list(full) == list(ref.state_dict())
        for key, value in ref.state_dict().items():
            close(full[key], value, f"{key} {what}")
        assert model.b2.lin.bias.grad is None  # frozen
        # the parameters are this rank's rows: 7x3 on 4 ranks is 2, 2, 2, 1 rows
        rows = [min(2, 7 - 2 * k) for k in range(4)] if n == 4 else [4, 3]
        assert model.b1.lin.weight.shape == (rows[r], 3), model.b1.lin.weight.shape

# an optimizer made before fully_shard holds the same Parameter objects, now the shards
model = Net()
opt = dt.optim.Adam(model.parameters(), lr=0.01)
shard(model)
close(global_mean(train(model, opt, range(K), mine)), ref_losses,  # Adam's, from above
      "optimizer made before sharding")

# state dicts: the sharded one reassembles (metadata) into the full one; it loads back
sharded = model.state_dict()
meta = sharded.shard_metadata
everyone = [None] * n
dist.all_gather_object(everyone, {k: (v.cpu().numpy(), meta.get(k)) for k, v in sharded.items()})
full = get_model_state_dict(model, options=FULL)
for key, value in full.items():
    if meta.get(key) is None:
        continue
    built = np.zeros(meta[key]["global_shape"])
    for part, m in (rank_sd[key] for rank_sd in everyone):
        rows = slice(m["offsets"][0], m["offsets"][0] + m["local_shape"][0])
        built[rows] = part
    close(built, value, f"reassembled {key}")
assert set(meta) == set(full) and "unproj" in meta  # the tied weight under both names
offload = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                               cpu_offload=True))
assert (offload.keys() == full.keys()) if r == 0 else offload == {}
before = {k: v.clone() for k, v in sharded.items()}
train(model, opt, [0], mine)
model.load_state_dict(before)
for k, v in model.state_dict().items():
    close(v, before[k], f"loaded {k}")

# gradient accumulation: two micro-batches, the first without gradient sync
ref = Net()
loss_fn(ref, 0, slice(None)).backward()
model = shard(Net())
half = np.arange(r * B, (r + 1) * B)
model.set_requires_gradient_sync(False)
with dist.CommCounter() as comm:
    (loss_fn(model, 0, half[:1]) / 3).backward()
assert "reduce_scatter" not in comm.calls and all(p.grad is None for p in model.parameters())
held = memory_stats(model)["gradients"]
assert held == sum(p.numel() * 8 for p in ref.parameters() if p.requires_grad), held
model.set_requires_gradient_sync(True)
(loss_fn(model, 0, half[1:]) * 2 / 3).backward()
shard_meta = model.state_dict().shard_metadata
for key, p in ref.named_parameters():
    if p.requires_grad:
        start = shard_meta[key]["offsets"][0]
        local = model.get_parameter(key)
        close(local.grad, p.grad[start:start + local.shape[0]], f"accumulated grad {key}")
print(f"RANK {r} OK")
'''


@pytest.mark.parametrize("n", [2, 4])
def test_fully_shard_equals_single_process(mpirun, n, device):
    out = mpirun(n, PARITY, timeout=240, env={"TEST_DEVICE": device}).stdout
    assert out.count("OK") == n, out
