"""Layers, activations and initialisation: values against NumPy, torch's init statistics."""
import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain.nn import init
from dtrain.nn.activation import erf

rng = np.random.default_rng(7)


def t(a, grad=False):
    return dt.tensor(a, dtype=dt.float64, requires_grad=grad)


def test_linear_forward_backward_and_names():
    lin = dt.nn.Linear(4, 3).double()
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert lin.weight.shape == (3, 4) and lin.bias.shape == (3,)
    x = rng.standard_normal((2, 5, 4))
    xt = t(x, grad=True)
    y = lin(xt)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), x @ w.T + b, rtol=1e-12)
    y.sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.ones((3, 10)) @ x.reshape(10, 4))
    np.testing.assert_allclose(lin.bias.grad.numpy(), [10.0] * 3)
    np.testing.assert_allclose(xt.grad.numpy(), np.broadcast_to(w.sum(0), (2, 5, 4)))
    assert dt.nn.Linear(4, 3, bias=False).bias is None
    with pytest.raises(RuntimeError, match="input has 5 features"):
        lin(t(np.ones((2, 5))))
    with pytest.raises(RuntimeError, match="same dtype"):
        lin(dt.ones(2, 4))  # float32 input, float64 layer: no silent promotion
    with dt.autocast("cpu"):
        assert dt.nn.Linear(4, 3)(dt.ones(2, 4)).dtype == dt.float16


def test_linear_default_init_matches_torch_rules():
    dt.manual_seed(0)
    lin = dt.nn.Linear(500, 400)
    bound = 1 / math.sqrt(500)  # kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3), bound 1/sqrt(fan)
    w = lin.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    b = lin.bias.detach().numpy()
    assert np.abs(b).max() <= bound and b.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_init_fan_rules_and_gains():
    w = dt.empty(256, 128, 3, 3)  # fan_in = 128 * 9, fan_out = 256 * 9
    fan_in, fan_out = 128 * 9, 256 * 9
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / fan_out), rel=0.01)
    init.kaiming_uniform_(w, nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / fan_in)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.01)
    init.xavier_uniform_(w, gain=init.calculate_gain("tanh"))
    assert w.numpy().std() == pytest.approx(5 / 3 * math.sqrt(2 / (fan_in + fan_out)), rel=0.01)
    init.xavier_normal_(w)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.01)
    init.normal_(w, 3.0, 0.5)
    assert w.numpy().mean() == pytest.approx(3.0, abs=0.01)
    init.uniform_(w, -2, -1)
    assert -2 <= w.numpy().min() and w.numpy().max() <= -1
    init.constant_(w, 0.25)
    assert (w.numpy() == 0.25).all()
    assert (init.zeros_(w).numpy() == 0).all() and (init.ones_(w).numpy() == 1).all()
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("selu") == 0.75 and init.calculate_gain("conv2d") == 1
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(dt.empty(5))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    p = dt.nn.Parameter(dt.empty(3, 4))  # a leaf that requires grad: filled without a graph
    init.kaiming_uniform_(p)
    assert p.grad_fn is None and p.requires_grad


def test_trunc_normal_and_orthogonal():
    w = dt.empty(200000, dtype=dt.float64)
    init.trunc_normal_(w, 1.0, 2.0, -1.0, 2.0)
    x = w.numpy()
    assert x.min() >= -1.0 and x.max() <= 2.0
    # mean of N(1, 4) truncated to [-1, 2]: 1 + 2 (phi(-1) - phi(0.5)) / (Phi(0.5) - Phi(-1))
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    assert x.mean() == pytest.approx(1 + 2 * (phi(-1) - phi(0.5)) / (cdf(0.5) - cdf(-1)), abs=0.01)
    for shape in [(3, 5), (6, 2, 2)]:
        q = init.orthogonal_(dt.empty(*shape), gain=2.0).numpy().reshape(shape[0], -1)
        small = q @ q.T if q.shape[0] <= q.shape[1] else q.T @ q
        np.testing.assert_allclose(small, 4 * np.eye(min(q.shape)), atol=1e-5)


def test_init_with_generator_is_reproducible():
    a, b = dt.empty(4, 4), dt.empty(4, 4)
    init.normal_(a, generator=dt.Generator().manual_seed(3))
    init.normal_(b, generator=dt.Generator().manual_seed(3))
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bilinear_flatten_unflatten_identity():
    bil = dt.nn.Bilinear(3, 2, 4).double()
    assert [n for n, _ in bil.named_parameters()] == ["weight", "bias"]
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    w, b = bil.weight.detach().numpy(), bil.bias.detach().numpy()
    expect = np.einsum("ni,kij,nj->nk", x1, w, x2) + b
    np.testing.assert_allclose(bil(t(x1), t(x2)).detach().numpy(), expect, rtol=1e-12)
    x = t(rng.standard_normal((2, 3, 4, 5)))
    assert dt.nn.Flatten()(x).shape == (2, 60)
    assert dt.nn.Flatten(0, 2)(x).shape == (24, 5)
    assert dt.nn.Unflatten(1, (3, 20))(dt.nn.Flatten()(x)).shape == (2, 3, 20)
    assert dt.nn.Identity(54, unused="x")(x) is x


def test_embedding_padding_and_pretrained():
    emb = dt.nn.Embedding(6, 3, padding_idx=2)
    assert (emb.weight.detach().numpy()[2] == 0).all()
    idx = dt.tensor([[2, 0, 2], [5, 0, 1]])
    out = emb(idx)
    np.testing.assert_array_equal(out.detach().numpy(), emb.weight.detach().numpy()[idx.numpy()])
    out.sum().backward()
    g = emb.weight.grad.numpy()
    np.testing.assert_array_equal(g[:, 0], [2, 1, 0, 0, 0, 1])  # row 2 (padding) gets none
    pre = dt.tensor(rng.standard_normal((4, 2)))
    frozen = dt.nn.Embedding.from_pretrained(pre)
    assert not frozen.weight.requires_grad and frozen.weight.shape == (4, 2)
    assert dt.nn.Embedding.from_pretrained(pre, freeze=False).weight.requires_grad
    for bad in ([6], [-1]):
        with pytest.raises(IndexError, match="index out of range"):
            emb(dt.tensor(bad))
    with pytest.raises(RuntimeError, match="indices"):
        emb(dt.tensor([1.0]))
    np.testing.assert_array_equal(F.one_hot(dt.tensor([0, 2]), 4).numpy(), [[1, 0, 0, 0],
                                                                           [0, 0, 1, 0]])
    assert F.one_hot(dt.tensor([0, 2])).dtype == dt.int64


def test_embedding_max_norm_renormalises_looked_up_rows():
    emb = dt.nn.Embedding(3, 4, max_norm=1.0)
    with dt.no_grad():
        emb.weight.copy_(dt.tensor([[3.0, 4.0, 0, 0], [0.1, 0, 0, 0], [5.0, 0, 0, 0]]))
    emb(dt.tensor([0, 1]))
    norms = np.linalg.norm(emb.weight.detach().numpy(), axis=1)
    np.testing.assert_allclose(norms, [1.0, 0.1, 5.0], rtol=1e-5)


def test_erf_is_accurate():
    xs = np.concatenate([np.linspace(-7, 7, 2001), [0.0, 1e-8, -1e-300, np.inf, -np.inf]])
    got = erf(t(xs)).numpy()
    expect = np.array([math.erf(v) for v in xs])
    np.testing.assert_allclose(got, expect, rtol=1e-14, atol=1e-300)
    assert np.isnan(erf(t(np.array([np.nan]))).numpy()).all()
    x32 = np.linspace(-7, 7, 4001).astype(np.float32)  # float32: correctly rounded
    got32 = erf(dt.tensor(x32)).numpy()
    assert got32.dtype == np.float32
    expect32 = np.array([math.erf(float(v)) for v in x32])
    np.testing.assert_allclose(got32, expect32, rtol=6e-8, atol=1e-30)


def test_activations_match_numpy():
    x = rng.standard_normal((4, 5)) * 3
    np_erf = np.vectorize(math.erf)
    sig = 1 / (1 + np.exp(-x))
    cases = {
        dt.nn.ReLU(): np.maximum(x, 0),
        dt.nn.LeakyReLU(0.2): np.where(x > 0, x, 0.2 * x),
        dt.nn.GELU(): 0.5 * x * (1 + np_erf(x / math.sqrt(2))),
        dt.nn.GELU("tanh"): 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                                    (x + 0.044715 * x ** 3))),
        dt.nn.SiLU(): x * sig,
        dt.nn.Tanh(): np.tanh(x),
        dt.nn.Sigmoid(): sig,
        dt.nn.ELU(0.5): np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
        dt.nn.Softplus(): np.log1p(np.exp(x)),
        dt.nn.Softplus(2.0, 3.0): np.where(2 * x > 3, x, np.log1p(np.exp(2 * x)) / 2),
        dt.nn.Softmax(1): np.exp(x) / np.exp(x).sum(1, keepdims=True),
        dt.nn.LogSoftmax(0): x - np.log(np.exp(x).sum(0, keepdims=True)),
        dt.nn.Softmin(1): np.exp(-x) / np.exp(-x).sum(1, keepdims=True),
        dt.nn.Hardtanh(-2.0, 1.5): np.clip(x, -2.0, 1.5),
        dt.nn.ReLU6(): np.clip(x, 0, 6),
        dt.nn.Hardsigmoid(): np.clip(x + 3, 0, 6) / 6,
        dt.nn.Hardswish(): x * np.clip(x + 3, 0, 6) / 6,
        dt.nn.LogSigmoid(): np.log(sig),
        dt.nn.Mish(): x * np.tanh(np.log1p(np.exp(x))),
        dt.nn.Softsign(): x / (1 + np.abs(x)),
        dt.nn.CELU(0.5): np.where(x > 0, x, 0.5 * (np.exp(x / 0.5) - 1)),
        dt.nn.SELU(): 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
        dt.nn.PReLU(): np.where(x > 0, x, 0.25 * x),
        dt.nn.GLU(0): x[:2] / (1 + np.exp(-x[2:])),
    }
    for module, expect in cases.items():
        np.testing.assert_allclose(module.double()(t(x)).detach().numpy(), expect, rtol=1e-12,
                                   atol=1e-14, err_msg=repr(module))


def test_activation_extremes_and_inplace():
    big = t(np.array([-1e4, -50.0, 50.0, 1e4]), grad=True)
    np.testing.assert_allclose(F.softplus(big).detach().numpy(), [0, math.exp(-50), 50, 1e4])
    for fn in (F.gelu, F.elu, F.silu, F.softplus):
        out = fn(big)
        out.sum().backward()
        assert np.isfinite(out.detach().numpy()).all() and np.isfinite(big.grad.numpy()).all()
        big.grad = None
    x = t(np.array([-1.0, 2.0]))
    assert F.relu(x, inplace=True) is x and x.tolist() == [0.0, 2.0]
    y = t(np.array([-1.0, 2.0]))
    dt.nn.LeakyReLU(0.5, inplace=True)(y)
    assert y.tolist() == [-0.5, 2.0]
    pr = dt.nn.PReLU(3).double()
    with dt.no_grad():
        pr.weight.copy_(t([0.1, 0.2, 0.3]))
    z = -np.ones((2, 3, 4))
    np.testing.assert_allclose(pr(t(z)).detach().numpy(),
                               -np.broadcast_to(np.array([0.1, 0.2, 0.3])[:, None], (2, 3, 4)))
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        pr(t(np.ones((2, 4))))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        assert F.softmax(t(np.zeros((2, 3)))).numpy()[0, 0] == pytest.approx(1 / 3)


def test_eye_dirac_and_sparse_init():
    w = dt.nn.Parameter(dt.empty(3, 5))
    assert init.eye_(w) is w
    np.testing.assert_array_equal(w.detach().numpy(), np.eye(3, 5))
    with pytest.raises(ValueError, match="Only tensors with 2 dimensions are supported"):
        init.eye_(dt.empty(2, 2, 2))

    conv = dt.nn.Conv2d(4, 3, 3, bias=False)
    init.dirac_(conv.weight)
    x = rng.standard_normal((2, 4, 6, 6))
    out = conv(t(x).float()).detach().numpy()
    np.testing.assert_allclose(out, x[:, :3, 1:-1, 1:-1], rtol=1e-6)  # identity on channels
    w = init.dirac_(dt.empty(6, 2, 4), groups=2).numpy()
    expected = np.zeros((6, 2, 4))
    for g in range(2):
        for d in range(2):
            expected[g * 3 + d, d, 2] = 1
    np.testing.assert_array_equal(w, expected)
    with pytest.raises(ValueError, match="dim 0 must be divisible by groups"):
        init.dirac_(dt.empty(5, 2, 3), groups=2)
    with pytest.raises(ValueError, match="Only tensors with 3, 4, or 5 dimensions"):
        init.dirac_(dt.empty(5, 2))

    s = init.sparse_(dt.empty(10, 400, dtype=dt.float64), sparsity=0.25, std=0.5).numpy()
    np.testing.assert_array_equal((s == 0).sum(0), np.full(400, 3))  # ceil(0.25 * 10) per column
    assert s[s != 0].std() == pytest.approx(0.5, rel=0.05)
    a = init.sparse_(dt.empty(6, 5), 0.5, generator=dt.Generator().manual_seed(1))
    b = init.sparse_(dt.empty(6, 5), 0.5, generator=dt.Generator().manual_seed(1))
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("shape, r", [((2, 8, 3, 2), 2), ((18, 2, 3), 3), ((1, 2, 4, 1, 1), 2)])
def test_pixel_shuffle_unshuffle(shape, r):
    x = rng.standard_normal(shape)
    *lead, c, h, w = shape
    expect = x.reshape(*lead, c // r // r, r, r, h, w)
    n = len(lead)
    expect = expect.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2).reshape(
        *lead, c // r // r, h * r, w * r)
    y = dt.nn.PixelShuffle(r)(t(x))
    np.testing.assert_array_equal(y.numpy(), expect)
    np.testing.assert_array_equal(dt.nn.PixelUnshuffle(r)(y).numpy(), x)
    y = dt.pixel_shuffle(t(x), r)
    assert dt.pixel_unshuffle(y, r).shape == x.shape
    with pytest.raises(RuntimeError, match="divisible by the square of upscale_factor"):
        F.pixel_shuffle(t(x), 5)
    with pytest.raises(RuntimeError, match="at least 3 dimensions"):
        F.pixel_unshuffle(t(np.ones((4, 4))), 2)


def test_channel_shuffle():
    x = np.arange(2 * 6 * 2.0).reshape(2, 6, 2)
    y = dt.nn.ChannelShuffle(2)(t(x)).numpy()
    np.testing.assert_array_equal(y, x[:, [0, 3, 1, 4, 2, 5]])  # groups (012)(345) interleaved
    np.testing.assert_array_equal(F.channel_shuffle(t(x), 3).numpy(), x[:, [0, 2, 4, 1, 3, 5]])
    with pytest.raises(RuntimeError, match="divisible by groups"):
        F.channel_shuffle(t(x), 4)


def test_lazy_linear_infers_in_features_at_first_call():
    dt.manual_seed(0)
    lazy = dt.nn.LazyLinear(3)
    assert lazy.weight is None and list(lazy.parameters()) == []
    x = dt.randn(5, 7)
    y = lazy(x)
    assert type(lazy) is dt.nn.Linear and lazy.in_features == 7
    assert lazy.weight.shape == (3, 7) and lazy.bias.shape == (3,)
    bound = 1 / math.sqrt(7)  # torch's default init for the inferred fan-in
    assert float(lazy.weight.abs().max()) <= bound and float(lazy.bias.abs().max()) <= bound
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() @ lazy.weight.detach().numpy().T
                               + lazy.bias.detach().numpy(), rtol=1e-6)
    assert len(list(lazy.parameters())) == 2
    assert dt.nn.LazyLinear(2, bias=False)(x).shape == (5, 2)


def test_gumbel_softmax_soft_hard_and_the_gumbel_max_frequencies():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    x = t(np.tile(logits, (40000, 1)))
    dt.manual_seed(0)
    hard = F.gumbel_softmax(x, tau=0.5, hard=True).numpy()
    assert set(np.unique(hard)) == {0.0, 1.0} and (hard.sum(1) == 1).all()
    # Gumbel-max: the argmax of logits + Gumbel noise is a sample of softmax(logits)
    np.testing.assert_allclose(hard.mean(0), [0.1, 0.2, 0.3, 0.4], atol=0.01)
    noise = dt.nn.activation.GumbelNoise.apply(x[:2000]).numpy()
    assert noise.mean() == pytest.approx(np.euler_gamma, abs=0.05)  # the Gumbel mean

    y = rng.standard_normal((3, 5))
    a, b = t(y, grad=True), t(y, grad=True)
    dt.manual_seed(1)
    soft = F.gumbel_softmax(a, tau=2.0, dim=0)
    dt.manual_seed(1)
    st = F.gumbel_softmax(b, tau=2.0, hard=True, dim=0)
    np.testing.assert_allclose(soft.detach().numpy().sum(0), np.ones(5), rtol=1e-12)
    np.testing.assert_array_equal(st.detach().numpy(),
                                  soft.detach().numpy() == soft.detach().numpy().max(0))
    cot = t(rng.standard_normal((3, 5)))
    (soft * cot).sum().backward()
    (st * cot).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-12)  # straight-through
    with pytest.warns(UserWarning, match="`eps` parameter is deprecated"):
        F.gumbel_softmax(a, eps=1e-5)


def ref_bags(w, idx, offsets, mode, psw=None, padding_idx=None):
    """Bag by bag in Python: the kept rows (weighted), then sum, mean or max; 0 if empty."""
    ends = list(offsets[1:]) + [len(idx)]
    out = []
    for b, (s, e) in enumerate(zip(offsets, ends)):
        rows = [w[i] * (1.0 if psw is None else psw[k]) for k, i in enumerate(idx[s:e], s)
                if i != padding_idx]
        if not rows:
            out.append(np.zeros(w.shape[1]))
            continue
        out.append({"sum": np.sum, "mean": np.mean, "max": np.max}[mode](rows, axis=0))
    return np.array(out)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_bag_against_python_bags(mode, padding_idx):
    w = rng.standard_normal((6, 4))
    idx = np.array([1, 2, 4, 4, 0, 2, 5, 3])
    offsets = [0, 3, 3, 4, 7]  # bag 1 empty; bag 4 has one entry
    got = F.embedding_bag(dt.tensor(idx), t(w), dt.tensor(offsets), mode=mode,
                          padding_idx=padding_idx)
    np.testing.assert_allclose(got.numpy(), ref_bags(w, idx, offsets, mode,
                                                     padding_idx=padding_idx), rtol=1e-12)
    bag = dt.nn.EmbeddingBag(6, 4, mode=mode, padding_idx=padding_idx,
                             include_last_offset=True).double()
    with dt.no_grad():
        bag.weight.copy_(t(w))
    got = bag(dt.tensor(idx), dt.tensor(offsets + [8]))
    np.testing.assert_allclose(got.detach().numpy(), ref_bags(w, idx, offsets, mode,
                                                              padding_idx=padding_idx),
                               rtol=1e-12)
    fixed = bag(dt.tensor(idx.reshape(2, 4)))  # 2-D input: each row is a bag
    np.testing.assert_allclose(fixed.detach().numpy(), ref_bags(w, idx, [0, 4], mode,
                                                                padding_idx=padding_idx),
                               rtol=1e-12)


def test_embedding_bag_per_sample_weights_gradient_and_errors():
    w = rng.standard_normal((5, 3))
    idx, offsets = np.array([0, 4, 4, 1, 3]), [0, 2]
    psw = rng.standard_normal(5)
    wt, pt = t(w, grad=True), t(psw, grad=True)
    out = F.embedding_bag(dt.tensor(idx), wt, dt.tensor(offsets), mode="sum",
                          per_sample_weights=pt)
    np.testing.assert_allclose(out.detach().numpy(), ref_bags(w, idx, offsets, "sum", psw),
                               rtol=1e-12)
    out.sum().backward()
    expected = np.zeros_like(w)
    np.add.at(expected, idx, np.repeat(psw[:, None], 3, 1))
    np.testing.assert_allclose(wt.grad.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(pt.grad.numpy(), w[idx].sum(1), rtol=1e-12)
    bag = dt.nn.EmbeddingBag(5, 3, mode="sum", padding_idx=1)
    assert repr(bag) == "EmbeddingBag(5, 3, mode='sum', padding_idx=1)"
    assert (bag.weight[1] == 0).all()
    frozen = dt.nn.EmbeddingBag.from_pretrained(t(w), mode="max")
    assert not frozen.weight.requires_grad
    np.testing.assert_array_equal(frozen(dt.tensor(idx), dt.tensor(offsets)).numpy(),
                                  ref_bags(w, idx, offsets, "max"))
    with pytest.raises(NotImplementedError, match="only supported for mode='sum'"):
        F.embedding_bag(dt.tensor(idx), wt, dt.tensor(offsets), per_sample_weights=pt)
    with pytest.raises(ValueError, match="offsets has to be None"):
        F.embedding_bag(dt.tensor(idx.reshape(1, 5)), wt, dt.tensor(offsets))
    with pytest.raises(ValueError, match="offsets\\[0\\] has to be 0"):
        F.embedding_bag(dt.tensor(idx), wt, dt.tensor([1, 3]))
