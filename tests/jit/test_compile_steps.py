"""What must compile: ordinary training steps, compiled and eager side by side on a stream of
new inputs and new labels, with equal parameters (to float rounding) after 12 steps. The
first two compiled calls record, the other ten replay. Also every loss that `nn` exports
and every optimizer that `optim` exports inside a compiled step (found by iterating the
packages, so a new one is covered or fails here). DDP on 2 ranks: test_ddp_compile.py."""
import inspect

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn, optim
from dtrain.nn import functional as F
from dtrain.nn.loss import _Loss

STEPS = 12


def _twins(make):
    dt.manual_seed(0)
    a, b = make(), make()
    b.load_state_dict(a.state_dict())
    return a, b


def _run(make_model, make_step, batches, rtol=1e-5, atol=1e-6, probe=None):
    """Run STEPS eager and compiled steps on `batches(rng)` with the same random stream;
    returns (eager outputs, compiled outputs, the compiled function). `probe(model)`, read
    after every step, must give equal values for both."""
    eager_model, model = _twins(make_model)
    eager, compiled = make_step(eager_model), dt.compile(make_step(model))
    rng = np.random.default_rng(1)
    want, got = [], []
    for i in range(STEPS):
        batch = batches(rng)
        dt.manual_seed(100 + i)  # dropout draws the same masks in both
        want.append(eager(*batch))
        dt.manual_seed(100 + i)
        got.append(compiled(*batch))
        if probe is not None:
            assert probe(model) == probe(eager_model), f"step {i}"
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=rtol, atol=atol, err_msg=name)
    for (name, b), c in zip(model.named_buffers(), eager_model.buffers()):
        np.testing.assert_allclose(b._data, c._data, rtol=rtol, atol=atol, err_msg=name)
    assert len(compiled.graphs) == 1 and compiled.graphs[0].has_backward
    return want, got, compiled


def _floats(rng, *shape):
    return dt.tensor(rng.standard_normal(shape).astype(np.float32))


def _labels(rng, n, *shape):
    return dt.tensor(rng.integers(0, n, shape))


def _plain_step(model, opt, loss_fn, scheduler=None):
    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        return loss.detach()
    return step


def _assert_losses(want, got):
    np.testing.assert_allclose([float(g) for g in got], [float(w) for w in want], rtol=1e-5)


def test_mlp_cross_entropy_sgd_momentum():
    def mlp():
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))
    want, got, _ = _run(mlp, lambda m: _plain_step(
        m, optim.SGD(m.parameters(), lr=0.1, momentum=0.9), F.cross_entropy),
        lambda rng: (_floats(rng, 8, 6), _labels(rng, 5, 8)))
    _assert_losses(want, got)


def test_class_weights_and_ignore_index_on_changing_labels():
    """The per-element weights (weight[target], 0 where ignored) and the mean's divisor are
    computed from each call's labels in the graph: a different number of ignored labels
    every step."""
    def mlp():
        return nn.Sequential(nn.Linear(6, 5))
    weight = dt.tensor([0.5, 1.0, 2.0, 1.5, 0.7])
    ignored = []

    def batch(rng):
        y = rng.integers(0, 5, 8)
        ignored.append(int((y == 3).sum()))
        return _floats(rng, 8, 6), dt.tensor(y)
    for loss_fn in (nn.CrossEntropyLoss(weight, ignore_index=3, label_smoothing=0.2),
                    lambda z, y: F.nll_loss(F.log_softmax(z, 1), y, weight, ignore_index=3)):
        ignored.clear()
        want, got, _ = _run(mlp, lambda m, f=loss_fn: _plain_step(
            m, optim.SGD(m.parameters(), lr=0.1), f), batch)
        _assert_losses(want, got)
        assert len(set(ignored)) > 1


def test_cnn_batchnorm_dropout_adam():
    def cnn():
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Dropout(0.3), nn.Flatten(),
                             nn.Linear(36, 5))
    want, got, _ = _run(cnn, lambda m: _plain_step(
        m, optim.Adam(m.parameters(), lr=0.01), nn.CrossEntropyLoss()),
        lambda rng: (_floats(rng, 4, 2, 6, 6), _labels(rng, 5, 4)))
    _assert_losses(want, got)


class _LanguageModel(nn.Module):
    def __init__(self, vocab=11, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, num_layers=2, batch_first=True)
        self.out = nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.out(self.lstm(self.embed(tokens))[0])


def test_lstm_language_model_adamw():
    def step_of(model):
        opt = optim.AdamW(model.parameters(), lr=0.01)

        def step(tokens, targets):  # next-token CE over the flattened (batch, time) grid
            opt.zero_grad()
            logits = model(tokens)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    def batch(rng):
        seq = rng.integers(0, 11, (3, 7))
        return dt.tensor(seq[:, :-1]), dt.tensor(seq[:, 1:])
    want, got, _ = _run(_LanguageModel, step_of, batch)
    _assert_losses(want, got)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


def test_transformer_label_smoothing_adamw_one_cycle_inside_the_step():
    opts, lrs = {}, []

    def step_of(model):
        opt = opts[model] = optim.AdamW(model.parameters(), lr=0.01)
        sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=STEPS + 1)
        return _plain_step(model, opt, nn.CrossEntropyLoss(label_smoothing=0.1), sched)

    def lr(model):  # the scheduler stepped inside the compiled step: replayed every call
        lrs.append(opts[model].param_groups[0]["lr"])
        return lrs[-1]
    want, got, _ = _run(_Encoder, step_of,
                        lambda rng: (_floats(rng, 4, 5, 8), _labels(rng, 3, 4)), probe=lr)
    _assert_losses(want, got)
    assert len(set(lrs)) == STEPS  # the rate moved on every step


def test_bce_with_logits_rmsprop():
    def mlp():
        return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4))
    want, got, _ = _run(mlp, lambda m: _plain_step(
        m, optim.RMSprop(m.parameters(), lr=0.01), nn.BCEWithLogitsLoss()),
        lambda rng: (_floats(rng, 8, 6), dt.tensor(rng.integers(0, 2, (8, 4)) * 1.0,
                                                   dtype=dt.float32)))
    _assert_losses(want, got)


def test_clip_grad_norm_layernorm_gelu():
    def net():
        return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 5))

    def step_of(model):
        opt = optim.SGD(model.parameters(), lr=0.5)

        def step(x, y):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.3)
            opt.step()
            return norm
        return step
    want, got, compiled = _run(net, step_of,
                               lambda rng: (_floats(rng, 8, 6) * 3, _labels(rng, 5, 8)))
    norms = [float(w) for w in want]
    np.testing.assert_allclose([float(g) for g in got], norms, rtol=1e-5)
    assert min(norms) > 0.3  # every step was clipped, by a coefficient computed in the graph
    names = [n.name() for n in compiled.graphs[0].nodes]
    assert "vector_norm" in names and "clamp" in names


def test_evaluation_after_the_optimizer_step_sees_the_new_parameters():
    """A step that trains, then evaluates the same batch in eval mode: the second forward
    runs after `opt.step()` changed the parameters, so it is not the first one again (the
    graph cannot see inside the optimizer call, a barrier for merging equal ops)."""
    def net():
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                             nn.Linear(16, 5))

    def step_of(model):
        opt = optim.SGD(model.parameters(), lr=0.2)

        def step(x, y):
            model.train()
            opt.zero_grad()
            loss = F.nll_loss(F.log_softmax(model(x), 1), y)
            loss.backward()
            opt.step()
            model.eval()
            with dt.no_grad():
                return loss.detach(), F.cross_entropy(model(x), y)
        return step
    want, got, _ = _run(net, step_of, lambda rng: (_floats(rng, 8, 6), _labels(rng, 5, 8)))
    np.testing.assert_allclose([[float(v) for v in g] for g in got],
                               [[float(v) for v in w] for w in want], rtol=1e-5)
    assert all(float(v) != float(t) for t, v in want)


class _GAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6), nn.Tanh())
        self.D = nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))


def test_gan_two_optimizers_two_backward_passes_and_noise_drawn_in_the_step():
    """DCGAN's step: noise drawn inside the step (`dt.randn`), the discriminator trained on
    `fake.detach()`, then the generator through the updated discriminator."""
    def step_of(gan):
        opt_g = optim.Adam(gan.G.parameters(), lr=0.01, betas=(0.5, 0.999))
        opt_d = optim.Adam(gan.D.parameters(), lr=0.01, betas=(0.5, 0.999))
        bce = nn.BCEWithLogitsLoss()

        def step(real):
            n = real.shape[0]
            fake = gan.G(dt.randn(n, 4))
            opt_d.zero_grad()
            loss_d = bce(gan.D(real), dt.ones(n, 1)) + bce(gan.D(fake.detach()), dt.zeros(n, 1))
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = bce(gan.D(fake), dt.ones(n, 1))
            loss_g.backward()
            opt_g.step()
            return loss_d.detach(), loss_g.detach()
        return step
    want, got, _ = _run(_GAN, step_of, lambda rng: (_floats(rng, 8, 6),))
    np.testing.assert_allclose([[float(v) for v in g] for g in got],
                               [[float(v) for v in w] for w in want], rtol=1e-5)


class _VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.mu, self.logvar = nn.Linear(10, 16), nn.Linear(16, 3), nn.Linear(16, 3)
        self.dec = nn.Linear(3, 10)

    def forward(self, x):
        h = F.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + dt.randn_like(mu) * dt.exp(0.5 * logvar)  # reparameterization
        return dt.sigmoid(self.dec(z)), mu, logvar


def test_vae_reparameterization_draws_new_noise_on_every_replay():
    def step_of(model):
        opt = optim.Adam(model.parameters(), lr=0.01)

        def step(x):
            opt.zero_grad()
            recon, mu, logvar = model(x)
            kld = -0.5 * dt.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = F.binary_cross_entropy(recon, x, reduction="sum") + kld
            loss.backward()
            opt.step()
            return loss.detach()
        return step
    want, got, _ = _run(_VAE, step_of,
                        lambda rng: (dt.tensor(rng.random((8, 10)).astype(np.float32)),))
    _assert_losses(want, got)


def test_gradient_accumulation_over_micro_batches_with_accuracy_and_clipping():
    """Four backward passes per step, each adding into `.grad`; the step's accuracy counted
    with argmax in the graph; clip_grad_value_ and Nesterov momentum with weight decay."""
    def net():
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 5))

    def step_of(model):
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=1e-3)

        def step(x, y):
            opt.zero_grad()
            correct = dt.zeros((), dtype=dt.int64)
            for xs, ys in zip(x.chunk(4), y.chunk(4)):
                logits = model(xs)
                (F.cross_entropy(logits, ys) / 4).backward()
                correct = correct + (logits.argmax(1) == ys).sum()
            nn.utils.clip_grad_value_(model.parameters(), 0.05)
            opt.step()
            return correct
        return step
    want, got, _ = _run(net, step_of, lambda rng: (_floats(rng, 16, 6), _labels(rng, 5, 16)))
    assert [int(g) for g in got] == [int(w) for w in want]
    assert len({int(w) for w in want}) > 1


def test_averaged_model_updated_inside_the_step():
    """swa_utils.AveragedModel.update_parameters after opt.step: its first call copies (a
    `where` on n_averaged, no Python branch on data), later calls average."""
    averaged = {}

    def net():
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))

    def step_of(model):
        opt = optim.SGD(model.parameters(), lr=0.2)
        avg = averaged[model] = optim.swa_utils.AveragedModel(model)

        def step(x, y):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            avg.update_parameters(model)
            return loss.detach()
        return step
    want, got, _ = _run(net, step_of, lambda rng: (_floats(rng, 8, 6), _labels(rng, 5, 8)))
    _assert_losses(want, got)
    eager_avg, compiled_avg = averaged.values()
    assert int(compiled_avg.n_averaged) == int(eager_avg.n_averaged) == STEPS
    for p, q in zip(compiled_avg.parameters(), eager_avg.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=1e-5, atol=1e-6)


def test_clip_grad_norm_error_if_nonfinite_is_checked_on_every_replay():
    """error_if_nonfinite=True is a recorded check, not a Python branch on the norm: the
    step compiles, and a replay whose gradients overflow raises as eager does."""
    model = nn.Linear(4, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
        opt.step()
        return norm

    compiled = dt.compile(step)
    rng = np.random.default_rng(0)
    for _ in range(3):
        assert np.isfinite(float(compiled(_floats(rng, 8, 4), _labels(rng, 3, 8))))
    x = _floats(rng, 8, 4)
    x[0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        compiled(x, _labels(rng, 3, 8))
    assert len(compiled.graphs) == 1


def test_grad_scaler_with_autocast_scale_is_graph_state():
    scalers, scales = {}, []

    def step_of(model):
        opt = optim.SGD(model.parameters(), lr=0.05)
        scaler = scalers[model] = dt.amp.GradScaler("cpu", init_scale=2.0 ** 12,
                                                    growth_interval=2)

        def step(x, y):
            opt.zero_grad()
            with dt.autocast("cpu"):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return loss.detach()
        return step

    def scale(model):
        scales.append(scalers[model].get_scale())
        return scales[-1]

    def mlp():
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))
    calls = iter(range(STEPS))

    def batch(rng):
        x = _floats(rng, 8, 6)
        if next(calls) in (5, 9):  # non-finite gradients: the step is skipped, scale backs off
            x._data[0, 0] = np.inf
        return x, _labels(rng, 5, 8)
    with np.errstate(invalid="ignore", over="ignore"):
        _run(mlp, step_of, batch, rtol=2e-3, atol=1e-4, probe=scale)
    # doubled after every two clean steps, halved at the non-finite ones (as eager's)
    assert scales[::2] == [2.0 ** e for e in (12, 13, 13, 14, 14, 13, 13, 14, 14, 13, 13, 14)]


# -- registry-driven: every loss and every optimizer -------------------------------------------
def _exported(module, base):
    return sorted((c for c in vars(module).values()
                   if inspect.isclass(c) and issubclass(c, base) and c is not base),
                  key=lambda c: c.__name__)


def _signs(rng, *shape):
    return dt.tensor(rng.choice([-1.0, 1.0], shape).astype(np.float32))


def _multilabels(rng):
    """MultiLabelMarginLoss targets: each row's labels first, then -1."""
    y = np.full((8, 5), -1)
    for row in y:
        row[:2] = rng.choice(5, 2, replace=False)
    return dt.tensor(y)


def _plain(transform=lambda z: z):
    return lambda loss_fn, z, y: loss_fn(transform(z), y)


# How each loss is called on the model output z and what its targets are, when not
# "float input, float target": (call(loss_fn, z, targets), targets maker).
LOSS_DATA = {
    "CrossEntropyLoss": (_plain(), lambda rng: _labels(rng, 5, 8)),
    "NLLLoss": (_plain(lambda z: F.log_softmax(z, 1)), lambda rng: _labels(rng, 5, 8)),
    "MultiMarginLoss": (_plain(), lambda rng: _labels(rng, 5, 8)),
    "MultiLabelMarginLoss": (_plain(), _multilabels),
    "BCELoss": (_plain(dt.sigmoid), lambda rng: dt.tensor(rng.uniform(0, 1, (8, 5)),
                                                           dtype=dt.float32)),
    "BCEWithLogitsLoss": (_plain(), lambda rng: dt.tensor(rng.uniform(0, 1, (8, 5)),
                                                          dtype=dt.float32)),
    "KLDivLoss": (_plain(lambda z: F.log_softmax(z, 1)),
                  lambda rng: F.softmax(_floats(rng, 8, 5), 1)),
    "CosineEmbeddingLoss": (lambda f, z, y: f(z, *y),
                            lambda rng: (_floats(rng, 8, 5), _signs(rng, 8))),
    "MarginRankingLoss": (lambda f, z, y: f(z[:, 0], z[:, 1], y), lambda rng: _signs(rng, 8)),
    "TripletMarginLoss": (lambda f, z, y: f(z, *y),
                          lambda rng: (_floats(rng, 8, 5), _floats(rng, 8, 5))),
    "GaussianNLLLoss": (lambda f, z, y: f(z, *y),
                        lambda rng: (_floats(rng, 8, 5), _floats(rng, 8, 5).abs() + 0.1)),
}


@pytest.mark.parametrize("loss_cls", _exported(nn, _Loss), ids=lambda c: c.__name__)
def test_every_loss_in_a_compiled_step(loss_cls):
    call, target = LOSS_DATA.get(loss_cls.__name__, (_plain(), lambda rng: _floats(rng, 8, 5)))
    loss_fn = loss_cls(reduction="batchmean") if loss_cls is nn.KLDivLoss else loss_cls()

    def mlp():
        return nn.Sequential(nn.Linear(6, 5))
    want, got, _ = _run(mlp, lambda m: _plain_step(
        m, optim.SGD(m.parameters(), lr=0.1), lambda z, y: call(loss_fn, z, y)),
        lambda rng: (_floats(rng, 8, 6), target(rng)))
    _assert_losses(want, got)


# Optimizers whose step needs a closure (re-evaluating the model in a data-dependent loop).
CLOSURE_OPTIMIZERS = {"LBFGS"}


class _SignSGD(optim.Optimizer):
    """A custom optimizer with its own torch-style `step` (in-place tensor updates): an
    effect too, marked by Optimizer.__init_subclass__."""

    def __init__(self, params, lr=0.01):
        super().__init__(params, dict(lr=lr))

    @dt.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(group["lr"] * p.grad.sign())


@pytest.mark.parametrize("opt_cls", [c for c in _exported(optim, optim.Optimizer)
                                     if c.__name__ not in CLOSURE_OPTIMIZERS] + [_SignSGD],
                         ids=lambda c: c.__name__)
def test_every_optimizer_in_a_compiled_step(opt_cls):
    def mlp():
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5))
    want, got, compiled = _run(mlp, lambda m: _plain_step(
        m, opt_cls(m.parameters(), lr=0.01), F.cross_entropy),
        lambda rng: (_floats(rng, 8, 6), _labels(rng, 5, 8)))
    _assert_losses(want, got)
    # zero_grad and step replay as one call each; their in-place updates are not recorded
    effects = [n.name() for n in compiled.graphs[0].nodes if n.kind != "op"]
    name = opt_cls.__name__
    assert effects[0] == f"call {name}.zero_grad" and effects[-1] == f"call {name}.step"
    assert "write" not in effects


@pytest.mark.parametrize("name", sorted(CLOSURE_OPTIMIZERS))
def test_closure_optimizers_are_refused_at_the_first_recording(name):
    model = nn.Linear(6, 5)
    opt = getattr(optim, name)(model.parameters(), lr=0.1)
    x, y = _floats(np.random.default_rng(0), 8, 6), dt.tensor([0, 1, 2, 3, 4, 0, 1, 2])

    def step(x, y):
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        return opt.step(closure)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    with pytest.raises(dt.jit.TraceError, match=rf"{name}.step\(closure=...\)"):
        dt.compile(step)(x, y)
    for p, q in zip(model.parameters(), before):  # refused before the step ran
        np.testing.assert_array_equal(p._data, q)


def test_data_dependent_backward_is_refused_at_the_first_recording():
    """prod's gradient branches on whether an input holds a zero: a host read, reported while
    the first call records (never a branch frozen into the graph)."""
    w = dt.tensor([1.0, 2.0, 3.0], requires_grad=True)

    def step(x):
        (w * x).prod().backward()
    with pytest.raises(dt.jit.TraceError, match=r"Tensor.item\(\) was called on .* \(in "
                       r"backward, .*reduce.py:\d+, called in step, .*test_compile_steps.py:\d+\)"):
        dt.compile(step)(dt.tensor([1.0, 0.5, 2.0]))
