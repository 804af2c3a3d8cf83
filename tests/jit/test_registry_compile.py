"""Every registry sample, compiled: the replayed graph equals eager — forward values, the
gradients of a replay through autograd, and a whole captured backward — on new data, with
the passes on and off."""
import numpy as np
import pytest

import dtrain as dt
from dtrain.autograd.registry import REGISTRY
from dtrain.core.tensor import Tensor


def _cases():
    for name, info in sorted(REGISTRY.items()):
        for i, sample in enumerate(info.samples()):
            yield pytest.param(f"{name}-{i}", sample, id=f"{name}-{i}")


# The samples that compiling refuses, with (part of) the TraceError it gives:
# - an argument computed with NumPy from the data, outside the op registry: the two
#   recordings (on different data) disagree, so compiling reports it instead of baking a
#   stale constant into the graph. Only a test artifact is left: the gelu_backward sample
#   computes its `cdf` argument with NumPy (in a model it is Gelu's recorded stash);
# - a result whose shape depends on the data (nonzero, unique; a boolean mask computed in
#   the function, here `mask[0]`): a graph replays static shapes.
_SHAPE = "shape depends on the values"
NOT_CAPTURABLE = {"gelu_backward-0": "outside the op registry", "nonzero-0": _SHAPE,
                  "select_take-6": _SHAPE, "unique-0": _SHAPE, "unique-1": _SHAPE}
# prod's gradient takes another formula when an input holds a zero: a branch on data, which
# recording reports (a host read) instead of freezing the branch it took.
NOT_CAPTURABLE_BACKWARD = {**NOT_CAPTURABLE,
                           **{f"prod-{i}": "was called on a traced tensor" for i in range(4)}}


CASES = list(_cases())


def _outs(out):
    return out if isinstance(out, tuple) else (out,)


def _new_data(args, scale=0.9):
    """Same shapes and dtypes, other values (float tensors scaled), fresh leaves."""
    out = []
    for a in args:
        if isinstance(a, Tensor):
            data = a._data * scale if a._data.dtype.kind == "f" else a._data.copy()
            a = Tensor._make(data).requires_grad_(a.requires_grad)
        out.append(a)
    return out


def _assert_same(got, want):
    for g, w in zip(_outs(got), _outs(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g._data, w._data, rtol=1e-12, atol=1e-12, equal_nan=True)


def _leaves(args):
    return [a for a in args if isinstance(a, Tensor) and a.requires_grad]


def _record(fn, sample, passes=dt.jit.PASSES, prepare=lambda a: a):
    """dt.compile(fn) after its two recordings (on different data), or the message of the
    TraceError that refused it, which only the NOT_CAPTURABLE samples may give."""
    compiled = dt.compile(fn, passes=passes)
    try:
        compiled(*prepare(list(sample.args)))
        compiled(*prepare(_new_data(sample.args, 0.5)))
    except dt.jit.TraceError as err:
        return str(err)
    assert len(compiled.graphs) == 1
    return compiled


def _replay(compiled, *args):
    """`compiled(*args)`, a replay. Graphs with random ops (`Op.random`, dropout's mask):
    their samples seed inside the function, which a replay does not repeat, so the default
    generators are first seeded as the last eager call of the sample left them (a real test
    of random ops, seeded outside the function, is tests/jit/test_random_ops.py)."""
    if any(n.kind == "op" and n.op.random for g in compiled.graphs for n in g.nodes):
        dt.manual_seed(dt.initial_seed())
    return compiled(*args)


def _check_capturable(compiled, name, expected_not):
    """Whether the sample was refused as expected; returns True when it was refused."""
    if isinstance(compiled, str):
        assert name in expected_not, (
            f"dt.compile cannot capture {name}: {compiled}. Use registry ops (not NumPy on "
            f"._data or a non-op function), or list it in NOT_CAPTURABLE")
        assert expected_not[name] in compiled
        return True
    assert name not in expected_not, f"{name} is capturable now: drop it from the list"
    return False


@pytest.mark.parametrize("passes", [dt.jit.PASSES, ()], ids=["passes", "no-passes"])
@pytest.mark.parametrize("name, sample", CASES)
def test_forward_and_grad_match_eager(name, sample, passes):
    compiled = _record(sample, sample, passes)
    if _check_capturable(compiled, name, NOT_CAPTURABLE):
        return
    args = _new_data(sample.args)
    with dt.no_grad():  # replay on arrays
        want = sample(*args)
        c_nograd = _record(sample, sample, passes)
        _assert_same(_replay(c_nograd, *args), want)
    got = _replay(compiled, *args)  # replay through autograd
    _assert_same(got, sample(*args))
    leaves = _leaves(args)
    outs = [o for o in _outs(got) if o.requires_grad]
    if not leaves or not outs:
        return
    rng = np.random.default_rng(0)
    cots = [Tensor._make(rng.uniform(-1, 1, o.shape)) for o in outs]
    grads = dt.autograd.grad(outs, leaves, cots, allow_unused=True)
    eager = [o for o in _outs(sample(*args)) if o.requires_grad]
    want = dt.autograd.grad(eager, leaves, cots, allow_unused=True)
    for g, w in zip(grads, want):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g._data, w._data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, sample", CASES)
def test_captured_backward_matches_eager(name, sample):
    """forward + backward inside the compiled function: the backward ops and the leaf
    gradient accumulation are replayed on arrays."""
    if not _leaves(sample.args):
        pytest.skip("no input requires grad")

    def step(args, cots):
        outs = [o for o in _outs(sample(*args)) if o.requires_grad]
        sum((o * c).sum() for o, c in zip(outs, cots)).backward()

    rng = np.random.default_rng(1)
    outs = [o for o in _outs(sample(*sample.args)) if o.requires_grad]
    cots = [Tensor._make(rng.uniform(-1, 1, o.shape)) for o in outs]
    compiled = _record(step, sample, prepare=lambda a: (a, cots))
    if _check_capturable(compiled, name, NOT_CAPTURABLE_BACKWARD):
        return
    args = _new_data(sample.args)
    _replay(compiled, args, cots)
    got = [a.grad for a in _leaves(args)]
    fresh = _new_data(sample.args)
    step(fresh, cots)
    for g, w in zip(got, [a.grad for a in _leaves(fresh)]):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g._data, w._data, rtol=1e-12, atol=1e-12)
    assert compiled.graphs[0].has_backward
