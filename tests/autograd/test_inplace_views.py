"""In-place changes of views while recording rebase the base's history (PyTorch's
CopySlices): gradients through the base, the view and sibling views see the change.
Expected values are PyTorch's for the same calls."""
import numpy as np
import pytest

import dtrain as dt


def _x(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return dt.tensor(rng.uniform(-1, 1, shape), requires_grad=True)


def test_in_place_on_a_slice_rebases_the_base():
    x = _x(3, 4)
    y = x * 1
    y[1:3].mul_(2)
    assert y.grad_fn.name() == "CopySlicesBackward0"
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1] * 4, [2] * 4, [2] * 4])


def test_a_base_without_history_gains_one_from_its_view():
    w = _x(4)
    out = dt.zeros(3, 4, dtype=dt.float64)
    out[1].copy_(w)
    assert out.requires_grad
    (out * dt.arange(3.0, dtype=dt.float64)[:, None]).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1, 1, 1, 1])
    np.testing.assert_array_equal(out.detach().numpy()[1], w.detach().numpy())


def test_a_sibling_view_taken_before_the_change_sees_it():
    x = _x(3, 4)
    y = x * 1
    column = y[:, 1]
    y[1].mul_(5)
    column.sum().backward()
    expected = np.zeros((3, 4))
    expected[:, 1] = [1, 5, 1]
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_the_view_itself_continues_from_the_new_base():
    x = _x(2, 3)
    y = x * 1
    row = y[0]
    row.add_(1)
    row.mul_(3)  # the second change reads the first
    (row * row).sum().backward()
    expected = np.zeros((2, 3))
    expected[0] = 2 * 9 * (x.detach().numpy()[0] + 1)
    np.testing.assert_allclose(x.grad.numpy(), expected)


@pytest.mark.parametrize("view", [lambda y: y.t()[0], lambda y: y.view(-1)[4:8],
                                  lambda y: y.split(1)[1][0], lambda y: y[..., 1:2]])
def test_view_chains_write_where_they_point(view):
    x = _x(3, 4)
    y = x * 1
    v = view(y)
    w = _x(*v.shape, seed=1)
    expected = y.detach().numpy().copy()
    view(dt.from_numpy(expected)).copy_(w.detach())  # the plain in-place write
    v.copy_(w)
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    (y * y).sum().backward()
    mask = np.ones((3, 4))
    view(dt.from_numpy(mask)).zero_()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy() * mask)
    np.testing.assert_allclose(w.grad.numpy(), 2 * w.detach().numpy())


def test_an_element_of_a_vector_is_a_view():
    a = dt.arange(3.0)
    a[1].mul_(10)
    np.testing.assert_array_equal(a.numpy(), [0, 10, 2])


def test_a_view_of_a_leaf_that_requires_grad_is_refused():
    p = dt.nn.Parameter(dt.ones(3))
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        p[0].mul_(2)
    with dt.no_grad():
        p[0].mul_(2)
    np.testing.assert_array_equal(p.detach().numpy(), [2, 1, 1])


def test_a_detached_alias_changes_in_place_without_touching_the_history():
    x = _x(3)
    w = _x(3, seed=1)
    d = x.detach()
    d.mul_(w)
    assert d.requires_grad and x.grad_fn is None
    np.testing.assert_array_equal(x.detach().numpy(), d.detach().numpy())
    d.sum().backward()
    assert x.grad is None and w.grad is not None


def test_values_saved_for_backward_are_still_guarded():
    x = _x(3, 4)
    y = x * 1
    z = y.sin()  # saves y
    y[0].mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_an_expanded_view_cannot_be_written():
    y = _x(3, 1) * 1
    with pytest.raises(RuntimeError, match="clone"):
        y.expand(3, 4).mul_(2)


def test_a_recurrent_loop_writing_states_into_a_buffer_matches_stack():
    """The user pattern: preallocate the outputs, fill them step by step through views."""
    T, B, H = 5, 2, 3
    xs, W, U = _x(T, B, H), _x(H, H, seed=1), _x(H, H, seed=2)

    def run(buffered):
        states = dt.zeros(T, B, H, dtype=dt.float64)
        h, out = dt.zeros(B, H, dtype=dt.float64), []
        for t in range(T):
            h = dt.tanh(xs[t] @ W + h @ U)
            if buffered:
                states[t].copy_(h)
            else:
                out.append(h)
        loss = (states if buffered else dt.stack(out)).pow(2).sum()
        return dt.autograd.grad(loss, (xs, W, U))

    for a, b in zip(run(True), run(False)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_reading_a_buffer_that_is_written_later_is_refused_as_in_pytorch():
    """All views of a base share its version counter: a matmul that saved `states[0]`
    sees the later write to `states[1]`, and backward refuses (PyTorch does the same)."""
    U = _x(3, 3)
    states = dt.zeros(2, 3, dtype=dt.float64)
    states[0].copy_(_x(3, seed=1))
    states[1].copy_(dt.tanh(states[0] @ U))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        states.sum().backward()


def test_a_compiled_step_with_an_in_place_view_change_equals_eager():
    def losses(compiled):
        dt.manual_seed(0)
        lin = dt.nn.Linear(4, 3).double()
        opt = dt.optim.SGD(lin.parameters(), lr=0.1)

        def step(x, y):
            opt.zero_grad()
            out = lin(x) * 1
            out[:, 0].mul_(2)
            loss = ((out - y) ** 2).mean()
            loss.backward()
            opt.step()
            return loss
        run = dt.compile(step) if compiled else step
        rng = np.random.default_rng(0)
        return [float(run(dt.tensor(rng.standard_normal((5, 4))),
                          dt.tensor(rng.standard_normal((5, 3))))) for _ in range(4)]

    np.testing.assert_allclose(losses(True), losses(False), rtol=1e-12)


def test_a_user_function_sees_the_renewed_view():
    class Double(dt.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    w = _x(3)
    out = dt.zeros(2, 3, dtype=dt.float64)
    row = out[0]  # taken before `out` has a history
    out[0].copy_(w)
    Double.apply(row).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2, 2, 2])
