"""Activation checkpointing: gradients equal to the unchecked run's exactly, activations
freed after forward, recomputation with the first run's random draws."""
import warnings

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.autograd.graph import saved_nbytes
from dtrain.utils.checkpoint import CheckpointError, checkpoint, checkpoint_sequential


def _block(d, p=0.0):
    return nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Dropout(p), nn.Linear(4 * d, d))


def _model(p=0.0, n=12, d=16):
    dt.manual_seed(0)
    return nn.ModuleList([_block(d, p) for _ in range(n)])


def _grads(module, *tensors):
    return [t.grad.numpy().copy() for t in (*module.parameters(), *tensors)]


def _train_step(blocks, x, ck, reentrant=False):
    """Loss, graph bytes after forward (with what checkpoints hold) and the gradients."""
    for p in blocks.parameters():
        p.grad = None
    dt.manual_seed(1)  # the same dropout draws in every variant
    h, held = x, 0
    for b in blocks:
        if ck:
            held += h.numpy(force=True).nbytes  # the input each checkpoint keeps
            h = checkpoint(b, h, use_reentrant=reentrant)
        else:
            h = b(h)
    loss = (h ** 2).sum()
    nbytes = saved_nbytes(loss) + held
    loss.backward()
    return loss.item(), nbytes, _grads(blocks, *([x] if x.requires_grad else []))


def _assert_equal(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_mlp_grads_equal_and_activations_at_least_3x_smaller(p):
    blocks = _model(p)
    x = dt.randn(8, 16)
    loss0, bytes0, g0 = _train_step(blocks, x, ck=False)
    loss1, bytes1, g1 = _train_step(blocks, x, ck=True)
    assert loss0 == loss1
    _assert_equal(g0, g1)
    assert bytes0 >= 3 * bytes1, (bytes0, bytes1)
    # without checkpoints each block keeps its input, its 4x-wide hidden activation and,
    # with dropout, the mask and its product: 16 floats per row x 12 blocks at least
    assert bytes0 >= 12 * 8 * 16 * 4 * 4


@pytest.mark.parametrize("reentrant", [False, True])
def test_input_requiring_grad_gets_the_same_gradient(reentrant):
    blocks = _model(0.3, n=3)
    x = dt.randn(4, 16, requires_grad=True)
    g0 = _train_step(blocks, x, ck=False)[2]
    x.grad = None
    g1 = _train_step(blocks, x, ck=True, reentrant=reentrant)[2]
    _assert_equal(g0, g1)


def test_activations_are_freed_until_backward_recomputes_them():
    lin = nn.Linear(3, 3).double()
    x = dt.randn(2, 3, dtype=dt.float64)
    y = checkpoint(lambda t: lin(t).tanh().exp(), x, use_reentrant=False)
    assert saved_nbytes(y) == 0
    plain = lin(x).tanh().exp()
    assert saved_nbytes(plain) > 0
    y.sum().backward(retain_graph=True)
    first = lin.weight.grad.numpy().copy()
    y.sum().backward()  # the refilled graph was retained: a second pass needs no recompute
    np.testing.assert_array_equal(lin.weight.grad.numpy(), 2 * first)


def test_saved_nbytes_counts_activations_not_parameters():
    w = nn.Parameter(dt.ones(3, 4, dtype=dt.float64))
    x = dt.ones(3, 4, dtype=dt.float64)
    y = (x * w).sum()  # mul saves x (96 bytes) and w (a parameter: not counted)
    assert saved_nbytes(y) == 96
    assert saved_nbytes([y, y]) == 96


def test_parameters_get_gradients_when_no_input_requires_grad():
    lin = nn.Linear(4, 2).double()
    x = dt.randn(3, 4, dtype=dt.float64)
    lin(x).sum().backward()
    ref = _grads(lin)
    lin.zero_grad(set_to_none=True)
    out = checkpoint(lin, x, use_reentrant=False)
    assert out.requires_grad
    out.sum().backward()
    _assert_equal(ref, _grads(lin))


def test_reentrant_without_grad_inputs_warns_and_gives_no_gradients():
    lin = nn.Linear(4, 2)
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        out = checkpoint(lin, dt.randn(3, 4), use_reentrant=True)
    assert not out.requires_grad and out.grad_fn is None


def test_non_tensor_args_kwargs_and_tuple_outputs():
    a = dt.randn(3, dtype=dt.float64, requires_grad=True)
    b = dt.randn(3, dtype=dt.float64, requires_grad=True)

    def fn(x, scale, y, *, shift=0.0):
        return (x * scale + shift).sin(), "tag", y.exp() * x, 7

    ref = fn(a, 2.0, b, shift=0.5)
    (ref[0].sum() + ref[2].sum()).backward()
    ga, gb = a.grad.numpy().copy(), b.grad.numpy().copy()
    a.grad = b.grad = None
    out = checkpoint(fn, a, 2.0, b, use_reentrant=False, shift=0.5)
    assert out[1] == "tag" and out[3] == 7
    np.testing.assert_array_equal(out[0].detach().numpy(), ref[0].detach().numpy())
    (out[0].sum() + out[2].sum()).backward()
    np.testing.assert_array_equal(a.grad.numpy(), ga)
    np.testing.assert_array_equal(b.grad.numpy(), gb)


def test_nested_checkpoints():
    blocks = _model(0.3, n=4)
    x = dt.randn(4, 16, requires_grad=True)
    g0 = _train_step(blocks, x, ck=False)[2]
    x.grad = None
    blocks.zero_grad(set_to_none=True)

    def inner(h, b):
        return checkpoint(b, h, use_reentrant=False)

    def outer(h):
        for b in blocks:
            h = checkpoint(inner, h, b, use_reentrant=False)
        return h

    dt.manual_seed(1)
    (checkpoint(outer, x, use_reentrant=False) ** 2).sum().backward()
    _assert_equal(g0, _grads(blocks, x))


def test_no_grad_just_runs_the_function():
    lin = nn.Linear(4, 2)
    x = dt.randn(3, 4, requires_grad=True)
    with dt.no_grad():
        out = checkpoint(lin, x, use_reentrant=False)
    assert not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), lin(x).detach().numpy())


def test_use_reentrant_must_be_passed_and_arguments_are_checked():
    x = dt.randn(2, requires_grad=True)
    with pytest.warns(UserWarning, match="use_reentrant parameter should be passed explicitly"):
        checkpoint(dt.sin, x)
    with pytest.warns(UserWarning, match="use_reentrant parameter should be passed explicitly"):
        checkpoint_sequential([dt.sin], 1, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint(dt.sin, x, use_reentrant=False)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: dim"):
        checkpoint(dt.sum, x, use_reentrant=True, dim=0)
    with pytest.raises(ValueError, match="determinism_check should be one of"):
        checkpoint(dt.sin, x, use_reentrant=False, determinism_check="strict")
    with pytest.raises(ValueError, match="Unexpected keyword arguments: foo"):
        checkpoint_sequential([dt.sin], 1, x, use_reentrant=False, foo=1)


def test_recomputation_that_differs_raises():
    calls = []

    def fn(x):
        calls.append(1)
        return (x[:len(calls)] * 2).sum()  # a different slice on the recomputation

    x = dt.randn(4, dtype=dt.float64, requires_grad=True)
    y = checkpoint(fn, x, use_reentrant=False)
    with pytest.raises(CheckpointError, match="different metadata"):
        y.backward()


def test_rng_state_preserved_and_restored():
    drop = nn.Dropout(0.5)
    x = dt.ones(64, dtype=dt.float64, requires_grad=True)
    dt.manual_seed(3)
    y = checkpoint(drop, x, use_reentrant=False)
    after_forward = dt.rand(5).numpy().copy()
    dt.manual_seed(3)
    drop(x)
    dt.rand(5)
    y.sum().backward()  # recomputes with the first run's generator state ...
    np.testing.assert_array_equal(x.grad.numpy(), (y.detach().numpy() != 0) * 2.0)
    dt.manual_seed(3)
    drop(x)
    np.testing.assert_array_equal(dt.rand(5).numpy(), after_forward)  # ... then puts it back

    x.grad = None
    dt.manual_seed(3)
    y = checkpoint(drop, x, use_reentrant=False, preserve_rng_state=False)
    y.sum().backward()  # a fresh mask in the recomputation: gradients no longer match
    assert not np.array_equal(x.grad.numpy(), (y.detach().numpy() != 0) * 2.0)


def test_checkpoint_sequential_equals_the_plain_sequential():
    dt.manual_seed(0)
    seq = nn.Sequential(*[m for _ in range(3) for m in _block(8, 0.2)])
    x = dt.randn(4, 8, requires_grad=True)
    dt.manual_seed(1)
    ref = seq(x)
    ref.sum().backward()
    g0 = _grads(seq, x)
    seq.zero_grad(set_to_none=True)
    x.grad = None
    dt.manual_seed(1)
    out = checkpoint_sequential(seq, 3, x, use_reentrant=False)
    np.testing.assert_array_equal(out.detach().numpy(), ref.detach().numpy())
    out.sum().backward()
    _assert_equal(g0, _grads(seq, x))


def test_autograd_grad_and_double_backward_through_a_checkpoint():
    x = dt.randn(5, dtype=dt.float64, requires_grad=True)

    def f(t):
        return (t.sin() * t).sum()

    (g_ref,) = dt.autograd.grad(f(x), x, create_graph=True)
    (gg_ref,) = dt.autograd.grad(g_ref.sum(), x)
    (g,) = dt.autograd.grad(checkpoint(f, x, use_reentrant=False), x, create_graph=True)
    (gg,) = dt.autograd.grad(g.sum(), x)
    np.testing.assert_array_equal(g.detach().numpy(), g_ref.detach().numpy())
    np.testing.assert_array_equal(gg.numpy(), gg_ref.numpy())


def test_context_fn_wraps_both_runs():
    entered = []

    class Mark:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            entered.append(self.name)

        def __exit__(self, *exc):
            pass

    x = dt.randn(3, requires_grad=True)
    y = checkpoint(dt.sin, x, use_reentrant=False,
                   context_fn=lambda: (Mark("forward"), Mark("recompute")))
    y.sum().backward()
    assert entered == ["forward", "recompute"]
    with pytest.raises(ValueError, match="only supported when use_reentrant=False"):
        checkpoint(dt.sin, x, use_reentrant=True, context_fn=lambda: (Mark(1), Mark(2)))


def test_input_modified_in_place_before_backward_raises():
    x = dt.randn(3, dtype=dt.float64, requires_grad=True)
    h = x * 1.0
    y = checkpoint(dt.sin, h, use_reentrant=False)
    with dt.no_grad():
        h.add_(1.0)
    with pytest.raises(RuntimeError, match="argument 0 of sin .* modified by an inplace"):
        y.sum().backward()


def test_recomputation_runs_under_the_first_runs_autocast():
    lin = nn.Linear(4, 4)
    x = dt.randn(2, 4, requires_grad=True)
    with dt.autocast("cpu"):
        ref = lin(x).float()
    ref.sum().backward()
    g0 = _grads(lin, x)
    lin.zero_grad(set_to_none=True)
    x.grad = None
    with dt.autocast("cpu"):
        out = checkpoint(lin, x, use_reentrant=False).float()
    assert out.grad_fn is not None
    out.sum().backward()  # outside autocast: the recomputation must cast as the first run
    _assert_equal(g0, _grads(lin, x))
