"""torch's legacy constructors and type strings: `dt.Tensor(2, 3)`, `dt.FloatTensor`...,
`Tensor.type()`, the `size=` forms of the factories, `randint`'s forms and `__format__`."""
import numpy as np
import pytest

import dtrain as dt

LEGACY = [("FloatTensor", dt.float32), ("DoubleTensor", dt.float64), ("LongTensor", dt.int64),
          ("IntTensor", dt.int32), ("BoolTensor", dt.bool), ("ByteTensor", dt.uint8)]


def test_tensor_constructor_follows_torch():
    x = dt.Tensor(2, 3)
    assert (x.shape, x.dtype, x.requires_grad) == ((2, 3), dt.float32, False)
    assert dt.Tensor(4).shape == (4,)  # sizes, not the value 4
    assert dt.Tensor(dt.Size([2, 1])).shape == (2, 1)
    y = dt.Tensor([1, 2])
    assert (y.dtype, y.tolist()) == (dt.float32, [1.0, 2.0])
    assert dt.Tensor(np.array([[1, 2]], np.int64)).tolist() == [[1.0, 2.0]]
    assert dt.Tensor().shape == (0,)
    a = np.arange(3.0)
    t = dt.Tensor(a)
    a[0] = 9.0
    assert t.tolist() == [0.0, 1.0, 2.0]  # a copy
    assert isinstance(x, dt.Tensor)


def test_tensor_constructor_follows_default_dtype():
    dt.set_default_dtype(dt.float64)
    try:
        assert dt.Tensor(2).dtype == dt.float64
    finally:
        dt.set_default_dtype(dt.float32)


def test_tensor_constructor_errors_name_the_problem():
    with pytest.raises(TypeError, match=r"data must be a sequence \(got float\).*dt.tensor"):
        dt.Tensor(4.0)
    with pytest.raises(TypeError, match=r"expected integer sizes.*\(int, float\)"):
        dt.Tensor(2, 3.0)
    with pytest.raises(ValueError, match="non-negative"):
        dt.Tensor(2, -1)


@pytest.mark.parametrize("name, dtype", LEGACY)
def test_legacy_types(name, dtype):
    cls = getattr(dt, name)
    x = cls(2, 3)
    assert (x.shape, x.dtype, type(x)) == ((2, 3), dtype, dt.Tensor)
    y = cls([1, 0, 1])
    assert y.dtype == dtype and y.tolist() == np.array([1, 0, 1]).astype(dtype.np).tolist()
    assert isinstance(y, cls) and isinstance(y, dt.Tensor)
    others = [c for n, c in LEGACY if c != dtype]
    assert not isinstance(y.to(others[0]), cls)
    assert not isinstance(np.zeros(2, dtype.np), cls)
    assert y.type() == f"torch.{name}"
    assert repr(cls) == f"<class 'dtrain.{name}'>"


def test_type_string_and_conversions(device):
    x = dt.tensor([1.5, -2.0], device=device)
    prefix = "torch.cuda." if device == "cuda" else "torch."
    assert x.type() == prefix + "FloatTensor"
    assert x.long().type() == prefix + "LongTensor"
    for spec in ("torch.DoubleTensor", "dtrain.DoubleTensor", dt.DoubleTensor):
        y = x.type(spec)
        assert (y.dtype, y.device.type) == (dt.float64, "cpu")
        assert y.tolist() == [1.5, -2.0]
    z = x.type(dt.int64)
    assert (z.dtype, z.device, z.tolist()) == (dt.int64, x.device, [1, -2])
    assert x.type("float64").dtype == dt.float64
    assert x.type(x.type()).dtype == dt.float32
    with pytest.raises(ValueError, match=r"invalid type: 'torch.FooTensor'"):
        x.type("torch.FooTensor")


def test_type_keeps_the_graph():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    x.type(dt.DoubleTensor).pow(2).sum().backward()
    assert x.grad.dtype == dt.float32 and x.grad.tolist() == [2.0, 4.0]


@pytest.mark.parametrize("factory", [dt.empty, dt.zeros, dt.ones, dt.rand, dt.randn])
def test_factories_take_sizes_in_every_form(factory):
    for args, kwargs in (((2, 3), {}), (((2, 3),), {}), (([2, 3],), {}),
                         ((), {"size": (2, 3)}), ((), {"size": [2, 3]})):
        t = factory(*args, **kwargs)
        assert (t.shape, t.dtype) == ((2, 3), dt.float32)
    assert factory(size=4).shape == (4,)
    with pytest.raises(TypeError, match="both positionally"):
        factory(2, size=(2,))


def test_factory_values_with_size_keyword():
    assert dt.zeros(size=(2,)).tolist() == [0.0, 0.0]
    assert dt.ones(size=(1, 2), dtype=dt.int64).tolist() == [[1, 1]]
    dt.manual_seed(3)
    a = dt.randn(size=(5,))
    dt.manual_seed(3)
    np.testing.assert_array_equal(a.numpy(), dt.randn(5).numpy())


def test_randint_forms():
    for args, kwargs, low, high in (((10, (300,)), {}, 0, 10), ((10,), {"size": (300,)}, 0, 10),
                                    ((5, 8, (300,)), {}, 5, 8),
                                    ((5, 8), {"size": (300,)}, 5, 8)):
        x = dt.randint(*args, **kwargs)
        assert (x.shape, x.dtype) == ((300,), dt.int64)
        v = x.numpy()
        assert v.min() == low and v.max() == high - 1
    with pytest.raises(TypeError, match="missing required argument 'size'"):
        dt.randint(10)


def test_format_of_a_scalar_tensor():
    loss = dt.tensor(0.123456)
    assert f"{loss:.4f}" == "0.1235"
    assert f"{dt.tensor(7):>3d}" == "  7"
    assert f"{dt.tensor([1.0, 2.0])}" == str(dt.tensor([1.0, 2.0]))
    assert f"{loss}" == str(loss.item())  # as torch: a 0-d tensor formats as its scalar
    with pytest.raises(TypeError, match=r"unsupported format string '.2f'.*shape \[2\]"):
        f"{dt.tensor([1.0, 2.0]):.2f}"
