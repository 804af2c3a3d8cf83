"""Whole training steps compiled (zero_grad, forward, loss, backward, optimizer step): N
compiled steps give the same parameters as N eager steps."""
import tracemalloc

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def _cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 3))


class _LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, num_layers=2, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


class _Block(nn.Module):
    """A pre-norm transformer block: attention, LayerNorm, GELU MLP, residuals."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(8), nn.LayerNorm(8)
        self.ff = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return self.head((x + self.ff(self.ln2(x))).mean(1))


MODELS = [(_mlp, (8, 6)), (_cnn, (4, 2, 8, 8)), (_LSTMHead, (2, 5, 4)), (_Block, (2, 5, 8))]


def _batches(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [(dt.tensor(rng.standard_normal(shape).astype(np.float32)),
             dt.tensor(rng.standard_normal((shape[0], 3)).astype(np.float32)))
            for _ in range(n)]


def _make_step(model, opt, loss_fn=nn.functional.mse_loss):
    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


OPTIMIZERS = {
    "sgd_momentum": lambda p: dt.optim.SGD(p, lr=0.02, momentum=0.5, weight_decay=1e-3),
    "adam": lambda p: dt.optim.Adam(p, lr=0.01),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("make, shape", MODELS, ids=["mlp", "cnn", "lstm", "transformer"])
def test_compiled_steps_equal_eager_steps(make, shape, opt_name):
    dt.manual_seed(0)
    eager_model = make()
    compiled_model = make()
    compiled_model.load_state_dict(eager_model.state_dict())
    eager_step = _make_step(eager_model, OPTIMIZERS[opt_name](eager_model.parameters()))
    step = dt.compile(_make_step(compiled_model,
                                 OPTIMIZERS[opt_name](compiled_model.parameters())))
    losses = []
    for x, y in _batches(shape, 2) * 4:
        want = eager_step(x, y)
        got = step(x, y)
        losses.append((float(got), float(want)))
    graph, = step.graphs  # recorded twice, then replayed six times
    assert graph.has_backward
    assert sum(n.kind == "call" for n in graph.nodes) == 2  # zero_grad, step
    np.testing.assert_allclose(*zip(*losses), rtol=1e-6)
    for (name, p), q in zip(compiled_model.named_parameters(), eager_model.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=1e-5, atol=1e-6, err_msg=name)
    assert losses[-1][0] < losses[1][0]  # it trains (the same batch, three steps later)


def test_compiled_forward_inside_an_eager_loop_gives_eager_gradients():
    dt.manual_seed(1)
    model = _mlp()
    twin = _mlp()
    twin.load_state_dict(model.state_dict())
    fwd = dt.compile(model)
    opt_a = dt.optim.SGD(model.parameters(), lr=0.1)
    opt_b = dt.optim.SGD(twin.parameters(), lr=0.1)
    for x, y in _batches((8, 6), 5, seed=3):
        for m, opt in ((fwd, opt_a), (twin, opt_b)):
            opt.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=1e-6, atol=1e-7)
    assert len(fwd.graphs) == 1


def test_compiled_cnn_module_with_batchnorm_in_an_eager_loop():
    """`model = dt.compile(model)` in a PyTorch-style loop: the replay runs through autograd,
    and BatchNorm's running statistics are updated from the batch statistics its replayed
    forward stashes (they were missing: the replay failed on its first call)."""
    def cnn():
        dt.manual_seed(2)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5))
    model, twin = cnn(), cnn()
    compiled = dt.compile(model)
    opts = [dt.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (compiled, twin)]
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = dt.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
        y = dt.tensor(rng.integers(0, 5, 2))
        for m, opt in zip((compiled, twin), opts):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(compiled.graphs) == 1


def _manual_sgd_step(model, update, lr=0.05):
    def step(x, y):
        model.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        for p in model.parameters():  # torch-style update through `.data`
            if update == "add_":
                p.data.add_(p.grad.data, alpha=-lr)
            else:
                p.data -= lr * p.grad.data
        return loss
    return step


@pytest.mark.parametrize("update", ["add_", "isub"])
def test_manual_update_through_data_is_captured(update):
    dt.manual_seed(4)
    model, twin = _mlp(), _mlp()
    twin.load_state_dict(model.state_dict())
    eager = _manual_sgd_step(model, update)
    compiled = dt.compile(_manual_sgd_step(twin, update))
    for x, y in _batches((8, 6), 3, seed=5) * 3:
        np.testing.assert_allclose(float(compiled(x, y)), float(eager(x, y)), rtol=1e-6)
    assert len(compiled.graphs) == 1
    for p, q in zip(twin.parameters(), model.parameters()):
        np.testing.assert_allclose(p.data.numpy(), q.data.numpy(), rtol=1e-5, atol=1e-6)


def _bn_pair():
    dt.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU())
    twin = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU())
    twin.load_state_dict(model.state_dict())
    return model, twin


def _inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [dt.tensor(rng.standard_normal((6, 4)).astype(np.float32)) for _ in range(n)]


def test_batchnorm_training_is_captured_with_its_running_statistics():
    """BatchNorm updates running_mean/var and num_batches_tracked with in-place tensor ops,
    which the graph records and replays."""
    model, twin = _bn_pair()
    compiled = dt.compile(model)
    with dt.no_grad():
        for x in _inputs(5, seed=1):
            np.testing.assert_allclose(compiled(x)._data, twin(x)._data, rtol=1e-6, atol=1e-6)
    assert len(compiled.graphs) == 1
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(model[1], name)._data, getattr(twin[1], name)._data,
                                   rtol=1e-6)
    assert int(model[1].num_batches_tracked.item()) == 5


def test_eval_mode_is_a_separate_signature():
    model, twin = _bn_pair()
    model.eval()
    twin.eval()
    compiled = dt.compile(model)
    with dt.no_grad():
        for x in _inputs(4):
            np.testing.assert_allclose(compiled(x)._data, twin(x)._data, rtol=1e-6, atol=1e-6)
        assert len(compiled.graphs) == 1
        model.train()   # a new signature: train-mode graph, with running-stat updates
        twin.train()
        for x in _inputs(3, seed=5):
            np.testing.assert_allclose(compiled(x)._data, twin(x)._data, rtol=1e-6, atol=1e-6)
        assert len(compiled.graphs) == 2


def test_lr_scheduler_step_inside_the_compiled_step():
    dt.manual_seed(3)
    models = [_mlp(), _mlp()]
    models[1].load_state_dict(models[0].state_dict())
    steps = []
    for m in models:
        opt = dt.optim.SGD(m.parameters(), lr=0.1)
        sched = dt.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

        def step(x, y, m=m, opt=opt, sched=sched):
            opt.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            opt.step()
            sched.step()
        steps.append(step)
    compiled = dt.compile(steps[1])
    for x, y in _batches((8, 6), 7, seed=4):
        steps[0](x, y)
        compiled(x, y)
    for p, q in zip(*(m.parameters() for m in models)):
        np.testing.assert_allclose(p._data, q._data, rtol=1e-6, atol=1e-7)
    assert [n.name() for n in compiled.graphs[0].nodes if n.kind == "call"] == \
        ["call SGD.zero_grad", "call SGD.step", "call StepLR.step"]


BIG_MODELS = {  # large enough that one activation (>= 128 KiB) dwarfs Python's own objects
    "mlp": (lambda: nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512),
                                  nn.Tanh(), nn.Linear(512, 3)), (64, 256)),
    "cnn": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.Sigmoid(),
                                  nn.MaxPool2d(2, padding=1), nn.Flatten(),
                                  nn.Linear(8 * 9 * 9, 3)), (16, 3, 32, 32))}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(BIG_MODELS))
def test_replayed_training_step_allocates_no_arrays(name, opt_name, extra_peak):
    make, shape = BIG_MODELS[name]
    dt.manual_seed(0)
    model = make()
    (x, y), = _batches(shape, 1)
    step = _make_step(model, OPTIMIZERS[opt_name](model.parameters()))
    for _ in range(2):
        step(x, y)
    eager = extra_peak(lambda: step(x, y))
    compiled = dt.compile(step)
    for _ in range(4):  # two recordings, then replays: buffers, workspaces, optimizer scratch
        compiled(x, y)
    before = [p._data.copy() for p in model.parameters()]
    peak = extra_peak(lambda: compiled(x, y))
    assert eager > 1_000_000  # eager allocates every activation and gradient
    # What remains: Python objects, and NumPy's own iteration buffer (8192 elements, at most
    # 64 KiB, whatever the array sizes) that ufuncs use to cast or broadcast operands.
    assert peak < 96_000, f"a replayed step allocated {peak} bytes"
    assert all(not np.array_equal(p._data, b) for p, b in zip(model.parameters(), before))


def test_gradients_and_outputs_that_the_user_keeps_are_never_overwritten(extra_peak):
    """Values that leave the graph (returned, leaves' .grad) reuse their array only once
    nothing outside holds it: what the user kept from one step survives the next."""
    dt.manual_seed(0)
    model = BIG_MODELS["mlp"][0]()
    opt = dt.optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        out = model(x)
        nn.functional.mse_loss(out, y).backward()
        opt.step()
        return out
    compiled = dt.compile(step)
    batches = _batches((64, 256), 5)
    for x, y in batches[:3]:
        compiled(x, y)
    kept_out = compiled(*batches[3])
    kept_grad = model[0].weight.grad
    snapshot = kept_out._data.copy(), kept_grad._data.copy()
    out = compiled(*batches[4])
    assert out._data is not kept_out._data and model[0].weight.grad._data is not kept_grad._data
    np.testing.assert_array_equal(kept_out._data, snapshot[0])
    np.testing.assert_array_equal(kept_grad._data, snapshot[1])
    # Once dropped, the arrays are reused: the steady state allocates nothing new.
    del kept_out, kept_grad, snapshot, out
    compiled(*batches[0])
    assert extra_peak(lambda: compiled(*batches[1])) < 200_000  # the returned output only


class _ResidualBlock(nn.Module):
    """ResNet's basic block (conv-BN-ReLU-conv-BN, plus a 1x1 conv-BN shortcut, then ReLU)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return nn.functional.relu(self.body(x) + self.shortcut(x))


CE_MODELS = {  # BIG_MODELS' MLP, its CNN with dropout (a random mask drawn each replay), and a
    # residual block with BatchNorm (batch statistics in its stash, running ones updated),
    # wide enough (1 KiB per channel vector) that NumPy's cache of small blocks hides nothing
    "mlp": BIG_MODELS["mlp"],
    "cnn_dropout": (lambda: nn.Sequential(*BIG_MODELS["cnn"][0]()[:-1], nn.Dropout(0.3),
                                          nn.Linear(8 * 9 * 9, 3)), BIG_MODELS["cnn"][1]),
    "residual_batchnorm": (lambda: nn.Sequential(_ResidualBlock(3, 256),
                                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                 nn.Linear(256, 3)), (8, 3, 8, 8))}


@pytest.mark.parametrize("name", sorted(CE_MODELS))
def test_replayed_cross_entropy_step_on_new_labels_allocates_no_arrays(name, extra_peak):
    """The benchmark's step (cross-entropy, SGD with momentum) on a stream of new
    batches and labels: after warm-up, a replay allocates no NumPy array that outlives it
    (every op of the step and of cross-entropy writes into a planned buffer; the returned
    loss reuses the array of the previous one once the caller dropped it, else it is the
    only new array), its transient memory is NumPy's ufunc buffers and small objects, and
    each weight's .grad is written into the same array every step."""
    dt.manual_seed(0)
    make, shape = CE_MODELS[name]
    model = make()
    step = _make_step(model, dt.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                      nn.functional.cross_entropy)
    rng = np.random.default_rng(0)
    batches = [(dt.tensor(rng.standard_normal(shape).astype(np.float32)),
                dt.tensor(rng.integers(0, 3, shape[0]))) for _ in range(6)]
    compiled = dt.compile(step)
    for batch in batches[:4]:  # two recordings, two replays
        compiled(*batch)

    def grad_addresses():
        return [p.grad._data.__array_interface__["data"][0] for p in model.parameters()]
    addresses = grad_addresses()

    def alive_after(batch):
        tracemalloc.start()
        try:
            loss = compiled(*batch)
            numpy_domain = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
            return loss, [t.size for t in
                          tracemalloc.take_snapshot().filter_traces([numpy_domain]).traces]
        finally:
            tracemalloc.stop()
    loss, alive = alive_after(batches[4])
    assert alive == []  # the previous loss was dropped: its array holds this one
    _, alive = alive_after(batches[5])
    assert alive == [loss._data.nbytes]  # `loss` is held: the new loss is the one new array
    assert grad_addresses() == addresses
    assert extra_peak(lambda: compiled(*batches[5])) < 96_000
    assert extra_peak(lambda: step(*batches[0])) > 1_000_000  # eager, for scale


def test_a_gradient_shared_by_two_leaves_is_copied_into_a_reused_array():
    """Two biases get equal gradients (CSE merges them into one value): replay gives the
    second leaf a copy, as eager's engine does, in an array reused once its .grad is
    dropped, so that the .grads never share memory and a replay allocates no array."""
    dt.manual_seed(0)
    w = dt.randn(256, 64, requires_grad=True)
    b1, b2 = dt.zeros(64, requires_grad=True), dt.zeros(64, requires_grad=True)
    opt = dt.optim.SGD([w, b1, b2], lr=0.0)  # zero_grad only

    def step(x):
        opt.zero_grad()
        ((x @ w + b1 + b2) ** 2).sum().backward()
    compiled = dt.compile(step)
    x = dt.randn(32, 256)
    for _ in range(4):
        compiled(x)
    tracemalloc.start()
    try:
        compiled(x)
        numpy_domain = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
        alive = tracemalloc.take_snapshot().filter_traces([numpy_domain]).traces
    finally:
        tracemalloc.stop()
    assert len(alive) == 0
    assert not np.shares_memory(b1.grad._data, b2.grad._data)
    expected = 2 * (x._data @ w._data).sum(0)
    np.testing.assert_allclose(b1.grad._data, expected, rtol=1e-5)
    np.testing.assert_allclose(b2.grad._data, expected, rtol=1e-5)
