import numpy as np
import pytest

import dtrain as dt


def test_creation_dtypes_follow_torch(device):
    assert dt.tensor([1.5, 2.0], device=device).dtype == dt.float32
    assert dt.tensor([1, 2], device=device).dtype == dt.int64
    assert dt.tensor([True, False], device=device).dtype == dt.bool
    assert dt.tensor(np.zeros(2, np.float64), device=device).dtype == dt.float64
    assert dt.tensor([3.141592653589793], dtype=dt.float64).item() == 3.141592653589793
    assert dt.arange(5, device=device).dtype == dt.int64
    assert dt.arange(0.0, 1.0, 0.25, device=device).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert dt.zeros(2, 3, device=device).shape == (2, 3)
    assert dt.ones((2, 3), dtype=dt.float64, device=device).dtype == dt.float64
    assert dt.full((2,), 7, device=device).dtype == dt.int64
    assert dt.eye(3, device=device).tolist()[1] == [0.0, 1.0, 0.0]
    assert dt.linspace(0, 1, 5, device=device).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    x = dt.randn(4, 5, dtype=dt.float64, device=device)
    for like in (dt.zeros_like, dt.ones_like, dt.rand_like, dt.randn_like, dt.empty_like):
        y = like(x)
        assert (y.shape, y.dtype, y.device) == (x.shape, x.dtype, x.device)
    assert dt.full_like(x, 2.0).sum().item() == 40.0


def test_tensor_copies_and_as_tensor_shares():
    a = np.arange(3.0)
    t = dt.tensor(a)
    a[0] = 100
    assert t[0].item() == 0.0
    s = dt.as_tensor(a)
    f = dt.from_numpy(a)
    a[1] = 50
    assert s[1].item() == 50 and f[1].item() == 50 and f.dtype == dt.float64


def test_metadata_and_conversions():
    x = dt.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert x.size() == dt.Size([2, 3]) and x.size(-1) == 3 and x.dim() == 2
    assert x.numel() == 6 and len(x) == 2 and x.is_leaf and x.device == dt.device("cpu")
    assert x[1, 2].item() == 6.0 and x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert float(x[0, 0]) == 1.0 and int(x[1, 1]) == 5
    assert x.double().dtype == dt.float64 and x.long().dtype == dt.int64
    assert x.to(dt.float16).dtype == dt.float16 and x.to("cpu") is x
    assert isinstance(x.numpy(), np.ndarray)
    with pytest.raises(RuntimeError, match="requires grad. Use tensor.detach"):
        x.clone().requires_grad_().numpy()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(x)
    with pytest.raises(RuntimeError, match="6 elements cannot be converted"):
        x.item()


def test_repr_matches_torch_format():
    assert repr(dt.tensor([1.0, 2.5])) == "tensor([1.0000, 2.5000])"
    assert repr(dt.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(dt.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(dt.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    assert repr(dt.tensor([1.0], dtype=dt.float64)) == "tensor([1.], dtype=dtrain.float64)"
    y = dt.tensor([1.0], requires_grad=True) * 2
    assert repr(y) == "tensor([2.], grad_fn=<MulBackward0>)"
    assert repr(dt.tensor([True, False])) == "tensor([ True, False])"


def test_type_promotion_follows_torch():
    i = dt.tensor([1, 2])
    f = dt.tensor([0.5, 0.5])
    assert (i + f).dtype == dt.float32            # numpy alone would give float64
    assert (i * 1.5).dtype == dt.float32
    assert (i / i).dtype == dt.float32            # true division of integers
    assert (i + 1).dtype == dt.int64
    assert (f + dt.tensor([1.0], dtype=dt.float64)).dtype == dt.float64
    assert (dt.tensor([True]) + 1).dtype == dt.int64
    assert (f.half() + i).dtype == dt.float16
    assert (f.half() * dt.tensor(2.0)).dtype == dt.float16   # 0-d tensors act like scalars
    assert (dt.tensor([1, 2], dtype=dt.int32) + dt.tensor(5)).dtype == dt.int32
    assert (i * dt.tensor(0.5)).dtype == dt.float32
    assert dt.sum(dt.tensor([1, 2], dtype=dt.int32)).dtype == dt.int64
    assert dt.div(dt.tensor([7, -7]), 2, rounding_mode="floor").tolist() == [3, -4]
    assert dt.div(dt.tensor([7, -7]), 2, rounding_mode="trunc").tolist() == [3, -3]


def test_ops_values_broadcasting_and_reductions():
    a = dt.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    b = dt.tensor([10.0, 20.0, 30.0])
    assert (a + b).tolist() == [[11, 18, 33], [14, 25, 24]]
    assert (2 - a)[0].tolist() == [1, 4, -1] and (1 / dt.tensor([4.0])).item() == 0.25
    assert a.sum(1).tolist() == [2.0, 3.0] and a.sum(dim=0, keepdim=True).shape == (1, 3)
    assert a.mean().item() == pytest.approx(5 / 6)
    np.testing.assert_allclose(a.var(1).numpy(), np.var(a.numpy(), 1, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(a.std(unbiased=False).item(), np.std(a.numpy()), rtol=1e-6)
    values, indices = a.max(dim=1)
    assert values.tolist() == [3.0, 5.0] and indices.tolist() == [2, 1]
    assert a.min().item() == -6.0 and a.argmax().item() == 4 and a.argmin(0).tolist() == [0, 0, 1]
    assert a.prod(1).tolist() == [-6.0, -120.0]
    np.testing.assert_allclose(a.logsumexp(1).numpy(),
                               np.log(np.exp(a.numpy()).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(a.softmax(-1).sum(-1).numpy(), [1, 1], rtol=1e-6)
    big = dt.tensor([1e4, 0.0, -1e4])
    assert np.isfinite(big.log_softmax(0).numpy()).all() and big.softmax(0).tolist() == [1, 0, 0]
    with pytest.raises(RuntimeError, match="log_softmax.*floating point input"):
        dt.arange(3).log_softmax(0)
    assert dt.maximum(a, b).tolist()[1] == [10, 20, 30] and a.clamp(-1, 1).tolist()[0] == [1, -1, 1]
    assert dt.where(a > 0, a, dt.zeros_like(a)).tolist()[0] == [1, 0, 3]
    assert (a > 0).dtype == dt.bool and (a == a).all().item()


def test_shape_ops():
    x = dt.arange(24).reshape(2, 3, 4)
    assert x.permute(2, 0, 1).shape == (4, 2, 3) and x.transpose(0, 2).shape == (4, 3, 2)
    assert x.flatten(1).shape == (2, 12) and x.view(6, 4).shape == (6, 4)
    assert x.unsqueeze(1).shape == (2, 1, 3, 4) and x[:, :1].squeeze(1).shape == (2, 4)
    assert x.T.shape == (4, 3, 2) and x.mT.shape == (2, 4, 3)
    assert dt.tensor([[1], [2]]).expand(2, 3).tolist() == [[1, 1, 1], [2, 2, 2]]
    assert dt.cat([x, x], 1).shape == (2, 6, 4) and dt.stack([x, x], -1).shape == (2, 3, 4, 2)
    parts = x.split([1, 2], dim=1)
    assert [p.shape[1] for p in parts] == [1, 2]
    assert [c.shape[0] for c in dt.arange(10).chunk(3)] == [4, 4, 2]
    assert dt.pad(dt.ones(2, 2), (1, 0, 0, 1)).tolist() == [[0, 1, 1], [0, 1, 1], [0, 0, 0]]
    idx = dt.tensor([[0, 2], [1, 1]])
    src = dt.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert src.gather(1, idx).tolist() == [[1, 3], [5, 5]]
    assert dt.zeros(2, 3).scatter_add(1, idx, dt.ones(2, 2)).tolist() == [[1, 0, 1], [0, 2, 0]]
    assert src.index_select(1, dt.tensor([2, 0])).tolist() == [[3, 1], [6, 4]]
    assert src.masked_fill(src > 4, 0.0).tolist() == [[1, 2, 3], [4, 0, 0]]


def test_indexing_get_and_set():
    x = dt.arange(12.0).reshape(3, 4)
    assert x[1].tolist() == [4, 5, 6, 7] and x[:, -1].tolist() == [3, 7, 11]
    assert x[dt.tensor([2, 0])][:, 0].tolist() == [8, 0]
    assert x[x > 9].tolist() == [10, 11] and x[[0, 2], [1, 3]].tolist() == [1, 11]
    x[0, 0] = 100
    x[x > 10] = -1
    x[:, 1] = dt.tensor([7.0, 8.0, 9.0])
    assert x.tolist() == [[-1, 7, 2, 3], [4, 8, 6, 7], [8, 9, 10, -1]]
    x += 1
    assert x[0, 0].item() == 0


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(3, 4\) and \(5, 2\) cannot be "
                                           r"multiplied"):
        dt.ones(3, 4) @ dt.ones(5, 2)
    with pytest.raises(RuntimeError, match=r"add: .*broadcast.*float32\[3\], float32\[4\]"):
        dt.ones(3) + dt.ones(4)
    with pytest.raises(RuntimeError, match="Sizes of tensors must match except in dimension 0"):
        dt.cat([dt.ones(2, 3), dt.ones(2, 4)])
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of "
                                         r"\[-2, 1\], but got 2\)"):
        dt.ones(2, 3).sum(2)
    with pytest.raises(RuntimeError, match="shape '\\[4, 2\\]' is invalid for input of size 6"):
        dt.ones(6).reshape(4, 2)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        dt.ones(3, 4).T.view(12)
    with pytest.raises(RuntimeError, match="The expanded size of the tensor"):
        dt.ones(2, 3).expand(2, 4)
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype"):
        dt.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="result type dtrain.float32 can't be cast"):
        dt.tensor([1, 2]).add_(0.5)
    with pytest.raises(TypeError, match="unknown dtype name"):
        dt.zeros(2, dtype="float128")


@pytest.mark.skipif(dt.cuda.is_available(), reason="a GPU is present")
def test_cuda_requested_without_gpu_is_a_clear_error():
    assert dt.cuda.is_available() is False and dt.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match="CUDA device cuda was requested but CUDA is not "
                                           "available"):
        dt.zeros(3, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        dt.ones(2).cuda()
    with pytest.raises(RuntimeError, match="Invalid device string|Expected one of cpu, cuda"):
        dt.device("tpu")


def test_manual_seed_makes_runs_reproducible(device):
    dt.manual_seed(123)
    a = (dt.randn(5, device=device), dt.rand(3, device=device),
         dt.randint(0, 10, (4,), device=device), dt.randperm(6, device=device))
    dt.manual_seed(123)
    b = (dt.randn(5, device=device), dt.rand(3, device=device),
         dt.randint(0, 10, (4,), device=device), dt.randperm(6, device=device))
    for x, y in zip(a, b):
        assert x.tolist() == y.tolist()
    assert sorted(a[3].tolist()) == list(range(6))
    g = dt.Generator(device).manual_seed(7)
    g2 = dt.Generator(device).manual_seed(7)
    assert dt.randn(3, generator=g, device=device).tolist() == \
        dt.randn(3, generator=g2, device=device).tolist()
    x = dt.randn(1000, device=device)
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_rng_state_round_trip():
    state = dt.get_rng_state()
    a = dt.randn(4).tolist()
    dt.set_rng_state(state)
    assert dt.randn(4).tolist() == a
