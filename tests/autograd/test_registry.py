"""Every registry op: gradients (reverse, second order, forward mode) against finite
differences in float64. An Op subclass that is not registered fails here."""
import numpy as np
import pytest

import dtrain as dt
from dtrain.autograd import gradcheck, gradgradcheck, jvpcheck
from dtrain.autograd.node import Op
from dtrain.autograd.registry import REGISTRY


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _cases(differentiable):
    for name, info in sorted(REGISTRY.items()):
        if info.differentiable == differentiable:
            for i, sample in enumerate(info.samples()):
                yield pytest.param(info, sample, id=f"{name}-{i}")


CASES = list(_cases(True))
NONDIFF_CASES = list(_cases(False))


def test_every_op_class_is_registered_with_samples():
    concrete = [c for c in _all_subclasses(Op) if hasattr(c, "forward")]
    missing = [c.__name__ for c in concrete if getattr(c, "op_name", None) not in REGISTRY
               or REGISTRY[c.op_name].op is not c]
    assert not missing, f"ops without a registry entry (and so without a gradient check): {missing}"
    empty = [name for name, info in REGISTRY.items() if not info.samples()]
    assert not empty, f"registry entries without samples: {empty}"
    assert len(concrete) >= 30


def _graph_ops(outputs):
    seen, stack, kinds = set(), [o.grad_fn for o in outputs if o.grad_fn is not None], set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        kinds.add(type(fn))
        stack.extend(e[0] for e in fn.next_edges if e is not None and hasattr(e[0], "next_edges"))
    return kinds


@pytest.mark.parametrize("info, sample", CASES)
def test_gradcheck(info, sample):
    out = sample(*sample.args)
    outs = out if isinstance(out, tuple) else (out,)
    if info.op is not None:
        assert info.op in _graph_ops(outs), f"sample does not exercise {info.op.__name__}"
    assert gradcheck(sample, sample.args, **sample.tol)


@pytest.mark.parametrize("info, sample", CASES)
def test_gradgradcheck(info, sample):
    assert gradgradcheck(sample, sample.args, **sample.tol)


@pytest.mark.parametrize("info, sample", CASES)
def test_forward_mode_jvp(info, sample):
    assert jvpcheck(sample, sample.args, **sample.tol)


@pytest.mark.parametrize("info, sample", NONDIFF_CASES)
def test_non_differentiable_ops_are_recorded_ops_without_gradient(info, sample):
    args = tuple(a.detach().requires_grad_(True) if a.is_floating_point() else a
                 for a in sample.args)
    out = sample(*args)
    assert not out.requires_grad and out.grad_fn is None
    np.testing.assert_array_equal(out.numpy(), sample(*sample.args).numpy())


def test_gradcheck_catches_a_wrong_backward():
    class Bad(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x  # should be 2 * g * x

    x = dt.randn(3, dtype=dt.float64, requires_grad=True)
    with pytest.raises(dt.autograd.GradcheckError, match="Jacobian mismatch"):
        gradcheck(Bad.apply, (x,))


def _holds_array(value):
    if isinstance(value, (tuple, list)):
        return any(_holds_array(v) for v in value)
    return isinstance(value, np.ndarray)


@pytest.mark.parametrize("info, sample", CASES)
def test_forward_stashes_only_declared_arrays(info, sample):
    """Every array (or tuple of arrays) a forward leaves on its node is declared in the op's
    `saves`: graph mode and activation checkpointing see only what is declared."""
    out = sample(*sample.args)
    stack = [o.grad_fn for o in (out if isinstance(out, tuple) else (out,))
             if isinstance(o, dt.Tensor) and o.grad_fn is not None]
    seen = set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if isinstance(fn, Op):
            undeclared = [k for k, v in vars(fn).items() if _holds_array(v)
                          and k not in fn.saves]
            assert not undeclared, f"{type(fn).__name__} stashes undeclared arrays {undeclared}"
        stack.extend(e[0] for e in fn.next_edges if e is not None and hasattr(e[0], "next_edges"))


def test_saves_must_be_a_tuple_of_names():
    with pytest.raises(TypeError, match="saves must be a tuple"):
        class Wrong(Op):  # a string, not a 1-tuple
            saves = ("inputs")
