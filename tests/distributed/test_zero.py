"""ZeroRedundancyOptimizer (ZeRO-1) on real MPI ranks: DDP + ZeRO, and ZeRO reducing the
gradients itself (`reduce_scatter_gradients=True`, no DDP), on a split batch equal one process
with the plain optimizer on the whole batch, in float64."""
import pytest

ZERO = r'''
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
from dtrain.distributed.optim import ZeroRedundancyOptimizer
from dtrain.nn import Module, Parameter

dist.init_process_group(backend="mpi")
r, n = dist.get_rank(), dist.get_world_size()
dt.set_default_dtype(dt.float64)
B, K = 3, 4  # per-rank batch, steps

class Net(Module):
    """Uneven sizes (7x3 does not split evenly) and a frozen parameter."""
    def __init__(self):
        super().__init__()
        g = np.random.default_rng(0)
        self.w1 = Parameter(dt.tensor(g.standard_normal((7, 3))))
        self.b1 = Parameter(dt.tensor(g.standard_normal(3)))
        self.w2 = Parameter(dt.tensor(g.standard_normal((3, 5))))
        self.b2 = Parameter(dt.tensor(g.standard_normal(5)))
        self.scale = Parameter(dt.tensor(g.standard_normal(5)), requires_grad=False)

    def forward(self, x):
        return ((x @ self.w1 + self.b1).tanh() @ self.w2 + self.b2) * self.scale

def groups(m):
    return [{"params": [m.w1, m.b1]}], {"params": [m.w2, m.b2, m.scale], "lr": 0.05}

data = np.random.default_rng(1).standard_normal((K, B * n, 7))
target = np.random.default_rng(2).standard_normal((K, B * n, 5))
mine = slice(r * B, (r + 1) * B)

def train(model, opt, steps, rows):
    losses = []
    for k in steps:
        opt.zero_grad()
        loss = ((model(dt.tensor(data[k, rows])) - dt.tensor(target[k, rows])) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses

def close(a, b, what):
    a, b = (x.detach().numpy() if isinstance(x, dt.Tensor) else np.asarray(x) for x in (a, b))
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14, err_msg=what)

for cls, kw in ((dt.optim.SGD, dict(lr=0.1, momentum=0.9)), (dt.optim.Adam, dict(lr=0.01))):
    for as_view, reduce in ((False, False), (True, False), (False, True), (True, True)):
        wrap = (lambda m: m) if reduce else dist.DistributedDataParallel
        options = dict(parameters_as_bucket_view=as_view, reduce_scatter_gradients=reduce)
        ref = Net()
        first, second = groups(ref)
        ref_opt = cls(first, **kw)
        ref_opt.add_param_group(second)
        ref_losses = [l.item() for l in train(ref, ref_opt, range(K), slice(None))]

        net = Net()
        model = wrap(net)
        first, second = groups(net)
        zero = ZeroRedundancyOptimizer(first, cls, **options, **kw)
        zero.add_param_group(second)
        losses = train(model, zero, range(K), mine)
        for loss in losses:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        close([l.item() for l in losses], ref_losses, f"losses {cls.__name__}")
        for name, p in ref.named_parameters():
            close(net.get_parameter(name), p, f"{name} {cls.__name__}")
        assert zero.param_groups[1]["lr"] == 0.05  # the class defaults fill the global groups
        assert ("betas" in zero.param_groups[0]) == (cls is dt.optim.Adam)

        # greedy partition by size (largest first, to the emptiest rank); each rank's optimizer
        # holds state for its own partition only
        names = {id(p): k for k, p in net.named_parameters()}
        parts = [None] * n
        dist.all_gather_object(parts, sorted(names[id(p)] for g in zero.optim.param_groups
                                             for p in g["params"]))
        # per group in order, sizes counted across groups: w1 b1 | w2 b2 scale
        expected = {2: [["scale", "w1"], ["b1", "b2", "w2"]],
                    4: [["w1"], ["b1", "scale"], ["w2"], ["b2"]]}[n]
        assert parts == expected, parts
        assert set(zero.optim.state) == {p for p in zero.optim.state if p.requires_grad}
        assert len(zero.state) == 0

        # full state dict on rank 0 equals the single-process optimizer's
        zero.consolidate_state_dict(to=0)
        if r == 0:
            full, want = zero.state_dict(), ref_opt.state_dict()
            assert sorted(full["state"]) == sorted(want["state"]) == [0, 1, 2, 3]
            for i, s in want["state"].items():
                for key, v in s.items():
                    close(full["state"][i][key], v, f"state {i} {key}")
            assert [g["params"] for g in full["param_groups"]] == [[0, 1], [2, 3, 4]]
        else:
            try:
                zero.state_dict()
                raise SystemExit("expected an error")
            except RuntimeError as e:
                assert "consolidate_state_dict(to=...)" in str(e)

        # resume: a fresh model and ZeRO optimizer load rank 0's state and go on as the reference
        box = [zero.state_dict() if r == 0 else None]
        dist.broadcast_object_list(box, src=0)
        net2 = Net()
        net2.load_state_dict(net.state_dict())
        first, second = groups(net2)
        zero2 = ZeroRedundancyOptimizer(first, cls, **options, **kw)
        zero2.add_param_group(second)
        zero2.load_state_dict(box[0])
        ref_more = train(ref, ref_opt, [0], slice(None))
        train(wrap(net2), zero2, [0], mine)
        for name, p in ref.named_parameters():
            close(net2.get_parameter(name), p, f"resumed {name}")

        if reduce:  # ZeRO's 2 parameter sizes per step (DDP + broadcasts move 3)
            with dist.CommCounter() as comm:
                train(net2, zero2, [1], mine)
            psi = 8 * sum(p.numel() for p in net2.parameters())
            flags = 4 * len(list(net2.parameters()))  # which parameters have a gradient
            assert comm.bytes == {"reduce_scatter": psi, "all_gather": psi,
                                  "all_reduce": flags}, comm.bytes
            assert comm.volume() == 2 * psi + 2 * flags  # 2 psi and a flag each (2 % in test_fsdp)

try:
    ZeroRedundancyOptimizer(Net().parameters(), dt.optim.SGD, overlap_with_ddp=True, lr=0.1)
    raise SystemExit("expected an error")
except NotImplementedError as e:
    assert "overlap_with_ddp" in str(e)
# a parameter without a gradient on any rank keeps none (its owner's Adam leaves it alone);
# one with a gradient on some ranks only is averaged with zeros from the others
net = Net()
before = net.b2.detach().numpy().copy()
zero = ZeroRedundancyOptimizer(net.parameters(), dt.optim.Adam, reduce_scatter_gradients=True,
                               lr=0.1, weight_decay=0.1)
if r == 0:
    (dt.tensor(data[0, mine]) @ net.w1).sum().backward()
zero.reduce_scatter_gradients()
owned = {id(q) for g in zero.optim.param_groups for q in g["params"]}
for p in (net.w1, net.b2):
    if id(p) in owned:
        if p is net.b2:
            assert p.grad is None
        else:
            expected = np.tile(data[0, :B].sum(0)[:, None], (1, 3)) / n
            close(p.grad, expected, "w1 gradient from rank 0 only")
zero.step()
assert np.array_equal(net.b2.detach().numpy(), before)

net = Net()
try:
    ZeroRedundancyOptimizer(net.parameters(), dt.optim.SGD, lr=0.1).reduce_scatter_gradients()
    raise SystemExit("expected an error")
except RuntimeError as e:
    assert "reduce_scatter_gradients=True" in str(e)
print(f"RANK {r} OK")
'''


@pytest.mark.parametrize("n", [2, 4])
def test_zero_equals_single_process_adam_and_sgd(mpirun, n):
    out = mpirun(n, ZERO, timeout=240).stdout
    assert out.count("OK") == n, out
