"""Random ops (`Op.random`, dropout's mask) in graph mode: each replay draws a fresh mask from
the default generator, so with the same seed compiled calls give exactly the eager sequence.
(A seed set inside a compiled function is not replayed: seed outside it.)"""
import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.nn import functional as F

CALLS = 5  # two recordings, three replays


def _t(*shape, seed=0):
    return dt.tensor(np.random.default_rng(seed).standard_normal(shape))


def _sequence(fn, make_args, seed=4):
    dt.manual_seed(seed)
    return [fn(*make_args()).detach().numpy() for _ in range(CALLS)]


def _mask_ops(compiled):
    return sum(n.kind == "op" and n.op.random for g in compiled.graphs for n in g.nodes)


FUNCTIONS = {
    "dropout": (lambda x: F.dropout(x, 0.5), (4, 6)),
    "dropout_p1": (lambda x: F.dropout(x, 1.0) + x, (4, 6)),
    "dropout1d": (lambda x: F.dropout1d(x, 0.3), (2, 5, 4)),
    "dropout2d": (lambda x: F.dropout2d(x, 0.4).tanh(), (2, 5, 3, 3)),
    "dropout3d": (lambda x: F.dropout3d(x, 0.6), (2, 3, 2, 2, 2)),
    "inplace": (lambda x: F.dropout(x * 1, 0.5, inplace=True), (4, 6)),
    "inplace2d": (lambda x: F.dropout2d(x * 1, 0.5, inplace=True) * 2, (2, 5, 3, 3)),
    "module": (nn.Sequential(nn.Linear(6, 5).double(), nn.Dropout(0.3), nn.ReLU()), (4, 6)),
    "attention": (lambda x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.5), (2, 3, 6)),
}


@pytest.mark.parametrize("passes", [dt.jit.PASSES, ()], ids=["passes", "no-passes"])
@pytest.mark.parametrize("grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_compiled_calls_draw_the_eager_masks(name, grad, passes):
    fn, shape = FUNCTIONS[name]
    compiled = dt.compile(fn, passes=passes)

    def args():
        return (_t(*shape).requires_grad_(grad),)

    with dt.set_grad_enabled(grad):
        want = _sequence(fn, args)
        got = _sequence(compiled, args)
    assert len(compiled.graphs) == 1 and _mask_ops(compiled) == 1  # replayed, mask recorded
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g, w, err_msg=f"call {i}")
    if name != "dropout_p1":  # fresh masks per call
        assert not all(np.array_equal(want[0], w) for w in want[1:])


def test_replay_gradients_use_the_replayed_mask():
    x = _t(5, 4)
    compiled = dt.compile(lambda a: F.dropout(a, 0.5) * a)
    dt.manual_seed(9)
    grads = []
    for _ in range(CALLS):
        a = x.detach().requires_grad_(True)
        out = compiled(a)
        out.sum().backward()
        grads.append(a.grad.numpy())
        mask = out.detach().numpy() / (x.numpy() ** 2)  # the mask this call drew
        np.testing.assert_allclose(a.grad.numpy(), 2 * mask * x.numpy(), rtol=1e-12)
    assert len(compiled.graphs) == 1


def _unused_then_used(x):
    F.dropout(x, 0.3)
    return F.dropout(x, 0.5)


# Graph passes never fold, merge or drop a random op (each changes the draws of the rest):
# name -> (function, its number of random ops).
KEPT = {
    "cse": (lambda x: F.dropout(x, 0.5) - F.dropout(x, 0.5), 2),  # equal arguments
    "dce": (_unused_then_used, 2),                                  # an unused mask
    "fold": (lambda x: x + F.dropout(dt.ones(30, dtype=dt.float64), 0.5), 1),  # constant
}


@pytest.mark.parametrize("name", sorted(KEPT))
def test_passes_keep_every_random_op(name):
    fn, n_random = KEPT[name]
    compiled = dt.compile(fn)
    want = _sequence(fn, lambda: (_t(30),))
    got = _sequence(compiled, lambda: (_t(30),))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert _mask_ops(compiled) == n_random


def test_eval_mode_records_no_mask():
    model = nn.Sequential(nn.Linear(6, 5).double(), nn.Dropout(0.5)).eval()
    compiled = dt.compile(model)
    x = _t(3, 6)
    with dt.no_grad():
        for _ in range(3):
            np.testing.assert_array_equal(compiled(x).numpy(), model(x).numpy())
    assert _mask_ops(compiled) == 0


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 3)
        self.drop, self.drop2d = nn.Dropout(0.3), nn.Dropout1d(0.2)

    def forward(self, x):
        h = self.drop2d(self.fc1(x).relu()[:, :, None]).squeeze(-1)
        return self.fc2(self.drop(h))


def test_training_steps_with_dropout_equal_eager_steps():
    dt.manual_seed(0)
    eager_model, model = _Net(), _Net()
    model.load_state_dict(eager_model.state_dict())
    rng = np.random.default_rng(1)
    batches = [(dt.tensor(rng.standard_normal((8, 6)).astype(np.float32)),
                dt.tensor(rng.standard_normal((8, 3)).astype(np.float32))) for _ in range(4)]

    def make_step(net):
        opt = dt.optim.SGD(net.parameters(), lr=0.1, momentum=0.5)

        def step(x, y):
            opt.zero_grad()
            loss = F.mse_loss(net(x), y)
            loss.backward()
            opt.step()
            return loss
        return step

    eager, compiled = make_step(eager_model), dt.compile(make_step(model))
    dt.manual_seed(5)
    want = [float(eager(x, y)) for x, y in batches]
    dt.manual_seed(5)
    got = [float(compiled(x, y)) for x, y in batches]
    graph, = compiled.graphs  # two recordings, two replays
    assert graph.has_backward and _mask_ops(compiled) == 2
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=1e-5, atol=1e-7, err_msg=name)
