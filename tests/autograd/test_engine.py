import gc
import weakref

import numpy as np
import pytest

import dtrain as dt


def leaf(*values, dtype=dt.float64):
    return dt.tensor(list(values), dtype=dtype, requires_grad=True)


def test_gradients_accumulate_and_broadcasting_is_undone():
    x = dt.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    b = dt.tensor([1.0, 1.0, 1.0], requires_grad=True)
    (x * b + b).sum().backward()
    assert b.grad.tolist() == [7.0, 9.0, 11.0] and b.grad.shape == b.shape
    assert x.grad.tolist() == [[1, 1, 1], [1, 1, 1]]
    (x * 2).sum().backward()
    assert x.grad.tolist() == [[3, 3, 3], [3, 3, 3]]   # accumulated


def test_graph_is_freed_and_second_backward_raises():
    x = leaf(1.0, 2.0)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.exp([1, 2]) * (1 + np.array([1, 2]))))
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        y.backward()


def test_saved_tensors_released_after_backward():
    x = leaf(1.0, 2.0)
    h = x * 3
    ref = weakref.ref(h)
    y = (h * h).sum()   # Mul saves h
    del h
    gc.collect()
    assert ref() is not None
    y.backward()
    gc.collect()
    assert ref() is None


def test_backward_errors():
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
        dt.ones(2).sum().backward()
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar"):
        (leaf(1.0, 2.0) * 2).backward()
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        (leaf(1.0, 2.0) * 2).backward(dt.ones(3, dtype=dt.float64))


def test_grad_modes_as_context_managers_and_decorators():
    x = leaf(1.0)
    with dt.no_grad():
        assert not (x * 2).requires_grad
        with dt.enable_grad():
            assert (x * 2).requires_grad
    with dt.set_grad_enabled(False):
        assert not dt.is_grad_enabled()
    assert dt.is_grad_enabled()

    @dt.no_grad()
    def f(t):
        return t * 2

    @dt.no_grad
    def g(t):
        return t * 2
    assert not f(x).requires_grad and not g(x).requires_grad and dt.is_grad_enabled()


def test_detach_shares_data_and_stops_gradients():
    x = leaf(1.0, 2.0)
    d = x.detach()
    assert not d.requires_grad and d._data is x._data
    (x * d).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0]


def test_autograd_grad_and_allow_unused():
    x, z = leaf(2.0), leaf(3.0)
    y = x ** 3
    (gx,) = dt.autograd.grad(y, x)
    assert gx.item() == 12.0 and x.grad is None
    with pytest.raises(RuntimeError, match="appears to not have been used"):
        dt.autograd.grad((x * 2).sum(), [x, z])
    gx, gz = dt.autograd.grad((x * 2).sum(), [x, z], allow_unused=True)
    assert gx.item() == 2.0 and gz is None
    h = x * 5                                   # gradient with respect to a non-leaf
    (gh,) = dt.autograd.grad((h * h).sum(), h)
    assert gh.item() == 20.0


def test_higher_order_second_derivative_of_tanh():
    x = dt.tensor([-1.0, 0.3, 2.0], dtype=dt.float64, requires_grad=True)
    y = x.tanh()
    (g,) = dt.autograd.grad(y.sum(), x, create_graph=True)
    (gg,) = dt.autograd.grad(g.sum(), x)
    t = np.tanh(x.detach().numpy())
    np.testing.assert_allclose(g.detach().numpy(), 1 - t ** 2, rtol=1e-12)
    np.testing.assert_allclose(gg.numpy(), -2 * t * (1 - t ** 2), rtol=1e-12)
    # third order through backward(create_graph=True)
    x3 = leaf(0.5)
    (d1,) = dt.autograd.grad(x3 ** 4, x3, create_graph=True)
    (d2,) = dt.autograd.grad(d1, x3, create_graph=True)
    d2.backward()
    assert x3.grad.item() == pytest.approx(24 * 0.5)


def test_long_chain_does_not_recurse():
    x = dt.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0
    y.sum().backward()
    assert x.grad.item() == 1.0


def test_inplace_on_saved_tensor_raises_version_error():
    x = leaf(1.0, 2.0)
    y = x * 2
    z = y * y      # saves y
    y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*version 1; "
                                           "expected version 0"):
        z.sum().backward()
    e = x.exp()    # exp saves its output
    e.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        e.sum().backward()


def test_inplace_on_leaf_requiring_grad_raises():
    x = leaf(1.0)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in "
                                           "an in-place operation"):
        x.add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        x[0] = 2.0
    with pytest.raises(RuntimeError, match="leaf Variable"):
        x.uniform_()       # random fills too; nn.init runs them under no_grad
    with dt.no_grad():
        x.add_(1)   # allowed: optimizers update parameters like this
    assert x.item() == 2.0 and x.is_leaf


def test_inplace_ops_on_non_leaves_give_correct_gradients():
    x = leaf(1.0, 2.0, 3.0)
    v = leaf(10.0)
    y = x * 1.0
    y.mul_(x)          # y = x^2
    y[1] = v * 2       # y = [x0^2, 2v, x2^2]
    y += x             # y = [x0^2 + x0, 2v + x1, x2^2 + x2]
    y.sum().backward()
    assert x.grad.tolist() == [3.0, 1.0, 7.0] and v.grad.tolist() == [2.0]
    assert y.grad_fn is not None and y.tolist() == [2.0, 22.0, 12.0]


def test_views_share_version_counter():
    x = leaf(1.0, 2.0, 3.0)
    y = x * 1
    v = y[1:]
    z = (y * y).sum()
    with dt.no_grad():
        v.zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_tensor_hooks_and_retain_grad():
    x = leaf(1.0, 2.0)
    seen = []
    h = x.register_hook(lambda g: g * 10)
    y = x * 3
    y.register_hook(lambda g: seen.append(g.tolist()))
    y.retain_grad()
    y.sum().backward()
    assert seen == [[1.0, 1.0]] and y.grad.tolist() == [1.0, 1.0]
    assert x.grad.tolist() == [30.0, 30.0]
    h.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_post_accumulate_grad_hook_sees_the_accumulated_grad():
    w = leaf(1.0, 2.0)
    log = []
    w.register_post_accumulate_grad_hook(lambda p: log.append(p.grad.tolist()))
    ((w * w).sum() + w.sum()).backward()
    assert log == [[3.0, 5.0]]   # called once, after both paths were summed
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda p: None)


def test_leaf_gradients_never_share_memory():
    a, b = leaf(1.0, 2.0), leaf(3.0, 4.0)
    (a + b).sum().backward()
    a.grad._data[0] = 99.0
    assert b.grad.tolist() == [1.0, 1.0]


class Cube(dt.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x ** 2


class SplitScale(dt.autograd.Function):
    """Two outputs, one of them saved; a non-tensor argument."""

    @staticmethod
    def forward(ctx, x, k):
        a, b = x * k, x.exp()
        ctx.k = k
        ctx.save_for_backward(b)
        return a, b

    @staticmethod
    def backward(ctx, ga, gb):
        (b,) = ctx.saved_tensors
        return ga * ctx.k + gb * b, None


def test_custom_function_first_and_second_order():
    x = dt.tensor([0.5, -1.0], dtype=dt.float64, requires_grad=True)
    assert dt.autograd.gradcheck(Cube.apply, (x,))
    assert dt.autograd.gradgradcheck(Cube.apply, (x,))
    y = Cube.apply(x)
    assert y.grad_fn.name() == "CubeBackward"
    assert dt.autograd.gradcheck(lambda t: SplitScale.apply(t, 3.0), (x,))
    a, b = SplitScale.apply(x, 2.0)
    a.sum().backward()            # b unused: its gradient is materialized as zeros
    assert x.grad.tolist() == [2.0, 2.0]


def test_custom_function_wrong_gradient_shape_is_reported():
    class Bad(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g.sum()
    with pytest.raises(RuntimeError, match="returned an invalid gradient at index 0 - got "
                                           r"\[\] but expected shape compatible with \[2\]"):
        Bad.apply(leaf(1.0, 2.0)).sum().backward()


def test_custom_function_may_return_a_broadcast_gradient():
    """The engine sums a gradient in the broadcast shape down to the input's shape, for user
    Functions as for registry ops, and records it (second order through it works)."""
    class AddRow(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x, row):
            return x + row

        @staticmethod
        def backward(ctx, g):
            return g, g * 2  # the row's gradient left in x's (broadcast) shape

    x = dt.ones(3, 2, dtype=dt.float64, requires_grad=True)
    row = dt.tensor([[1.0, 2.0]], dtype=dt.float64, requires_grad=True)
    w = dt.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=dt.float64)
    (AddRow.apply(x, row) * w).sum().backward()
    assert row.grad.shape == (1, 2) and row.grad.tolist() == [[18.0, 24.0]]
    assert x.grad.tolist() == w.tolist()
    (gr,) = dt.autograd.grad((AddRow.apply(x, row) ** 2).sum(), (row,), create_graph=True)
    assert gr.shape == (1, 2) and gr.requires_grad
    gr.sum().backward()
    assert row.grad.tolist() == [[18.0 + 24.0, 24.0 + 24.0]]  # 3 rows * 4 * the 2 above


def test_forward_mode_jvp_and_vjp_values():
    x = dt.tensor([0.1, 0.7], dtype=dt.float64)
    v = dt.tensor([1.0, -2.0], dtype=dt.float64)
    out, jv = dt.autograd.functional.jvp(lambda t: t.sin() * t, x, v)
    xn, vn = x.numpy(), v.numpy()
    np.testing.assert_allclose(jv.numpy(), (np.cos(xn) * xn + np.sin(xn)) * vn, rtol=1e-12)
    np.testing.assert_allclose(out.numpy(), np.sin(xn) * xn)
    _, vj = dt.autograd.functional.vjp(lambda t: (t * t).sum(), x)
    np.testing.assert_allclose(vj.numpy(), 2 * xn)
    jac = dt.autograd.functional.jacobian(lambda t: t * t, x)
    np.testing.assert_allclose(jac.numpy(), np.diag(2 * xn))


@pytest.mark.parametrize("op", [lambda a, b: a * b, lambda a, b: a + b, lambda a, b: b - a,
                                lambda a, b: a / b, lambda a, b: b ** a,
                                lambda a, b: dt.where(a > 0.5, a, b),
                                lambda a, b: dt.maximum(a, b)])
def test_each_input_gets_a_gradient_of_its_own_dtype(op):
    # a float32 (2, 3) meets a broadcast float64 (3,): the result is float64, but as in
    # PyTorch a's gradient is float32 and b's float64 (summed over the broadcast rows)
    a32 = np.array([[0.25, 0.5, 0.75], [1.0, 1.25, 1.5]], np.float32)
    b64 = np.array([0.6, 0.9, 1.2])
    a = dt.tensor(a32, requires_grad=True)
    b = dt.tensor(b64, requires_grad=True)
    out = op(a, b)
    assert out.dtype == dt.float64
    out.sum().backward()
    assert a.grad.dtype == dt.float32 and b.grad.dtype == dt.float64
    a64 = dt.tensor(a32.astype(np.float64), requires_grad=True)
    b_ref = dt.tensor(b64, requires_grad=True)
    op(a64, b_ref).sum().backward()  # the same gradients computed in float64, then cast
    np.testing.assert_array_equal(a.grad.numpy(), a64.grad.numpy().astype(np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), b_ref.grad.numpy())


def test_gradient_dtype_holds_through_intermediates_and_higher_order():
    a = dt.tensor([0.5, -1.0, 2.0], requires_grad=True)  # float32
    h = a.tanh()  # a float32 intermediate that meets float64
    w = dt.tensor([1.0, 2.0, 3.0], dtype=dt.float64, requires_grad=True)
    (g,) = dt.autograd.grad((h * h * w).sum(), a, create_graph=True)
    assert g.dtype == dt.float32 and g.requires_grad
    g.sum().backward()
    assert a.grad.dtype == dt.float32 and w.grad.dtype == dt.float64
    t = np.tanh(np.array([0.5, -1.0, 2.0], np.float32)).astype(np.float64)
    np.testing.assert_allclose(w.grad.numpy(), 2 * t * (1 - t ** 2), rtol=1e-6)


def test_float32_model_with_float64_targets_gets_float32_gradients():
    # a common script pattern: float64 targets (np.float64 data) against a float32 model;
    # the loss is float64, the parameters' gradients and Adam's updates stay float32
    dt.manual_seed(0)
    model = dt.nn.Sequential(dt.nn.Linear(3, 4), dt.nn.Tanh(), dt.nn.Linear(4, 1))
    opt = dt.optim.Adam(model.parameters(), lr=0.01)
    x = dt.randn(8, 3)
    y = dt.tensor(np.linspace(-1, 1, 8).reshape(8, 1))  # float64
    loss = ((model(x) - y) ** 2).mean()
    assert loss.dtype == dt.float64
    loss.backward()
    assert [p.grad.dtype for p in model.parameters()] == [dt.float32] * 4
    opt.step()
    assert [p.dtype for p in model.parameters()] == [dt.float32] * 4


def test_integer_and_bool_inputs_get_no_gradient():
    w = dt.tensor([0.5, 1.5], requires_grad=True)
    n = dt.tensor([2, 3])
    mask = dt.tensor([True, False])
    (w * n + mask).sum().backward()
    assert w.grad.dtype == dt.float32 and w.grad.tolist() == [2.0, 3.0]
    assert n.grad is None and mask.grad is None and not n.requires_grad
