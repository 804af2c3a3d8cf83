"""`Tensor.data` as in PyTorch: a Tensor sharing the array, outside autograd."""
import copy
import pickle

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn


def test_data_is_a_leaf_tensor_sharing_the_array(device):
    x = dt.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    y = x * 2
    for t in (x, y, nn.Parameter(dt.ones(3, device=device))):
        d = t.data
        assert type(d) is dt.Tensor and d is not t
        assert d.requires_grad is False and d.grad_fn is None and d.is_leaf and d.grad is None
        assert (d.shape, d.dtype, d.device) == (t.shape, t.dtype, t.device)
    assert y.data.tolist() == [2.0, 4.0, 6.0]
    assert x.data.data_ptr() == x.data_ptr()


def test_data_shares_memory_without_a_copy():
    plain = dt.arange(6.0).reshape(2, 3)
    assert np.shares_memory(plain.numpy(), plain.data.numpy())
    x = dt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert np.shares_memory(x.detach().numpy(), x.data.numpy())
    assert x.data.numpy().tolist() == [1.0, 2.0, 3.0]  # x.numpy() raises: x requires grad


def test_inplace_through_data_is_not_recorded_nor_versioned():
    p = nn.Parameter(dt.tensor([1.0, 2.0, 3.0]))
    version = p._version[0]
    assert p.data.add_(1) is not p
    assert p.tolist() == [2.0, 3.0, 4.0]
    assert p._version[0] == version and p.grad_fn is None and p.is_leaf and p.requires_grad
    p.data.mul_(dt.tensor([1.0, 0.5, 2.0]))
    assert p.tolist() == [2.0, 1.5, 8.0] and p._version[0] == version
    # detach() shares the version counter (as torch): the same change is seen by autograd
    p.detach().add_(1)
    assert p.tolist() == [3.0, 2.5, 9.0] and p._version[0] == version + 1


def test_data_changes_escape_the_saved_tensor_check_but_detach_changes_do_not():
    x = dt.tensor([1.0, 2.0], dtype=dt.float64, requires_grad=True)
    loss = (x * x).sum()
    x.data.mul_(3)              # unchecked, as torch: backward reads the new values
    loss.backward()
    assert x.grad.tolist() == [6.0, 12.0]
    loss = (x * x).sum()
    x.detach().mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_init_style_inplace_ops_through_data_on_a_leaf_that_requires_grad():
    w = nn.Parameter(dt.zeros(20000))
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.uniform_(-0.1, 0.1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.add_(1)
    dt.manual_seed(0)
    assert w.data.uniform_(-0.1, 0.1) is not w
    a = w.detach().numpy()
    assert a.min() >= -0.1 and a.max() < 0.1 and abs(a.mean()) < 0.005 and a.std() > 0.05
    w.data.normal_(2.0, 0.5)
    a = w.detach().numpy()
    assert abs(a.mean() - 2.0) < 0.02 and abs(a.std() - 0.5) < 0.02
    w.data.zero_()
    assert not w.detach().numpy().any()
    w.data.copy_(dt.tensor(np.resize([-3.0, 0.5, 2.0], 20000)))
    w.data.clamp_(-1, 1)
    assert w[:3].tolist() == [-1.0, 0.5, 1.0] and w.detach().numpy().max() == 1.0
    w.data.fill_(0.25)
    assert w.detach().numpy().tolist() == [0.25] * 20000
    assert w.requires_grad and w.is_leaf and w.grad_fn is None and type(w) is nn.Parameter


def test_setting_data_swaps_the_storage():
    p = nn.Parameter(dt.zeros(2, 3))
    opt = dt.optim.SGD([p], lr=0.5)
    t = dt.arange(4, dtype=dt.float64)
    p.data = t                   # other shape and dtype: both follow `t`, as torch
    assert type(p) is nn.Parameter and p.requires_grad and p.is_leaf
    assert p.shape == (4,) and p.dtype == dt.float64
    assert np.shares_memory(p.detach().numpy(), t.numpy())
    t.add_(1)                    # the arrays are one
    assert p.tolist() == [1.0, 2.0, 3.0, 4.0]
    (p * p).sum().backward()     # the optimizer holding `p` sees the new storage
    opt.step()
    assert p.tolist() == [0.0, 0.0, 0.0, 0.0] and t.tolist() == [0.0, 0.0, 0.0, 0.0]
    version = p._version[0]
    p.data -= 1                  # in place on the shared array, then `p.data = ` the same
    assert p.tolist() == [-1.0] * 4 and p._version[0] == version
    with pytest.raises(TypeError, match=r"wrap it in a Tensor.*dt\.as_tensor"):
        p.data = np.zeros(3)
    assert p.tolist() == [-1.0] * 4


def test_item_numpy_and_parameter_from_data():
    x = dt.tensor([1.5, -2.0], requires_grad=True)
    loss = (x * x).sum()
    assert loss.data.item() == 6.25 and float(loss.data) == 6.25
    t = dt.tensor([[1.0, 2.0], [3.0, 4.0]])
    p = nn.Parameter(t.data)
    assert p.requires_grad and not t.requires_grad and type(p) is nn.Parameter
    assert np.shares_memory(p.detach().numpy(), t.numpy())
    q = nn.Parameter(p.data, requires_grad=False)
    assert not q.requires_grad and q.tolist() == t.tolist()


@pytest.mark.skipif(not dt.cuda.is_available(), reason="no CUDA GPU (CuPy absent or no device)")
def test_numpy_of_cuda_data_names_cpu():
    t = dt.ones(3, device="cuda", requires_grad=True)
    with pytest.raises(TypeError, match=r"Tensor\.cpu\(\)"):
        t.data.numpy()
    assert t.data.cpu().numpy().tolist() == [1.0, 1.0, 1.0]


def test_module_with_data_initialised_weights_pickles_and_copies():
    dt.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    for m in net.modules():
        if isinstance(m, nn.Linear):
            m.weight.data.uniform_(-0.1, 0.1)
            m.bias.data.zero_()
    x = dt.randn(5, 3)
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        for (name, a), (_, b) in zip(net.named_parameters(), twin.named_parameters()):
            assert type(b) is nn.Parameter and b.requires_grad, name
            assert np.array_equal(a.data.numpy(), b.data.numpy()), name
            assert not np.shares_memory(a.data.numpy(), b.data.numpy()), name
        np.testing.assert_array_equal(twin(x).data.numpy(), net(x).data.numpy())
    state = net.state_dict()
    other = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(x).data.numpy(), net(x).data.numpy())


def _regression(seed=0, steps=60, batch=16):
    """A stream of changing batches from a fixed linear teacher with noise."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((4, 1))
    for _ in range(steps):
        x = rng.standard_normal((batch, 4))
        yield dt.tensor(x), dt.tensor(x @ teacher + 0.01 * rng.standard_normal((batch, 1)))


def _train(update, lr=0.05):
    dt.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    opt = dt.optim.SGD(model.parameters(), lr=lr) if update == "optim" else None
    losses = []
    for x, y in _regression():
        loss = ((model(x) - y) ** 2).mean()
        losses.append(loss.data.item())
        model.zero_grad()
        loss.backward()
        if opt is not None:
            opt.step()
            continue
        for p in model.parameters():
            if update == "add_":
                p.data.add_(p.grad.data, alpha=-lr)
            else:
                p.data -= lr * p.grad.data
    return [p.detach().numpy().copy() for p in model.parameters()], losses


def test_manual_sgd_through_data_matches_optim_sgd():
    ref, ref_losses = _train("optim")
    assert np.mean(ref_losses[-10:]) < 0.2 * np.mean(ref_losses[:10])  # it does learn
    for update in ("add_", "isub"):
        got, losses = _train(update)
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-6, atol=1e-6)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
