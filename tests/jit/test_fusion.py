"""Elementwise fusion (jit/fusion.py): which nodes are grouped, and that the fused program
computes eager's values. On the CPU the program runs unwrapped (NumPy ufuncs); the
`cupy.fuse` path runs only in the CUDA case of the last test."""
import numpy as np
import pytest

import dtrain as dt
from dtrain.autograd.node import Op
from dtrain.jit.executor import ArrayRunner
from dtrain.jit.fusion import fuse_elementwise
from dtrain.jit.passes import plan_memory

UNFUSED = ("fold", "cse", "dce")


def _x(*shape, dtype=dt.float64):
    return dt.randn(*shape, dtype=dtype)


def _fused(fn, inputs, fuse=False):
    """The graph of `fn` on `inputs` after fusion, and an `ArrayRunner` replaying it."""
    graph = dt.jit.trace(fn, inputs, passes=UNFUSED).graph
    before = len(graph.nodes)
    fuse_elementwise(graph, wrap=lambda program: program)
    return graph, before, ArrayRunner(graph, plan_memory(graph, fuse=fuse))


def _check(runner, fn, inputs):
    got, want = runner(inputs), fn(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert g._data.dtype == w._data.dtype
        np.testing.assert_allclose(g._data, w._data, rtol=1e-12, atol=0)


@pytest.mark.parametrize("fuse", [False, True], ids=["plan", "plan-in-place"])
def test_chain_becomes_one_node(fuse):
    def f(x, w):
        return ((x * w + 0.5).tanh() - x).exp() * 2

    graph, before, runner = _fused(f, (_x(4, 3), _x(3)), fuse)
    assert before == 6 and len(graph.nodes) == 1
    assert "= fused[mul,add,tanh,sub,exp,mul](%0, %1)  # float64[4, 3]" in str(graph)
    assert not issubclass(graph.nodes[0].op, Op)  # graph-only: no registry entry needed
    for _ in range(3):  # replays on new values, reusing the planned buffer
        _check(runner, f, (_x(4, 3), _x(3)))


def test_a_fused_graph_exports_its_registry_ops(tmp_path):
    def f(x, w):
        return ((x * w + 0.5).tanh() - x).exp() * 2

    inputs = (_x(4, 3), _x(3))
    graph, _, _ = _fused(f, inputs)
    dt.jit.save(graph, tmp_path / "fused.dtj")
    loaded = dt.jit.load(tmp_path / "fused.dtj", passes=UNFUSED)
    assert [n.name() for n in loaded.graph.nodes] == ["mul", "add", "tanh", "sub", "exp", "mul"]
    np.testing.assert_allclose(loaded(*inputs)._data, f(*inputs)._data, rtol=1e-12)


def test_returned_intermediate_ends_a_group():
    def f(x):
        a = x * 2 + 1
        return (a.tanh() * 3, a)

    graph, before, runner = _fused(f, (_x(5),))
    assert before == 4 and [n.name() for n in graph.nodes] == ["fused[mul,add]",
                                                              "fused[tanh,mul]"]
    _check(runner, f, (_x(5),))


def test_intermediate_read_outside_the_group_is_not_fused_away():
    def f(x):
        a = (x * 2).exp()
        return a.sum() + a * 3, (a - 1).abs()  # `a` feeds sum, mul and sub

    graph, before, runner = _fused(f, (_x(2, 3),))
    names = [n.name() for n in graph.nodes]
    assert before == 7 and names == ["fused[mul,exp]", "sum", "fused[mul,add]",
                                     "fused[sub,abs]"]
    _check(runner, f, (_x(2, 3),))


def test_shared_input_inside_a_group_diamond():
    def f(x):
        a = x.tanh()
        return (a * a + a.exp()) / (a + 2)

    graph, before, runner = _fused(f, (_x(6),))
    assert before == 6 and [n.name() for n in graph.nodes] == [
        "fused[tanh,mul,exp,add,add,div]"]
    _check(runner, f, (_x(6),))


def test_steps_whose_dtype_numpy_resolves_otherwise_stay_unfused():
    def f(i, x):
        return (i * 0.5).exp() + x  # int64 * 0.5 is float32 in PyTorch, float64 in NumPy

    inputs = (dt.tensor([1, 2, 3]), _x(3, dtype=dt.float32))
    graph, before, runner = _fused(f, inputs)
    assert [n.name() for n in graph.nodes] == ["mul", "fused[exp,add]"]
    _check(runner, f, inputs)


def test_different_shapes_are_not_one_group():
    def f(x, y):
        return (x.exp() * 2) + (y.exp() * 2)  # [3] + [2, 3]: the add has another shape

    inputs = (_x(3), _x(2, 3))
    graph, before, runner = _fused(f, inputs)
    assert [n.name() for n in graph.nodes] == ["fused[exp,mul]", "fused[exp,mul,add]"]
    _check(runner, f, inputs)


def test_a_group_never_spans_an_in_place_write():
    w = dt.ones(3, dtype=dt.float64)

    def f(x):
        a = x * w
        w.mul_(2)  # fusing `a` into the ops below would read the doubled `w`
        return (a + 1) * w

    graph, before, runner = _fused(f, (_x(3),))
    assert [n.name() for n in graph.nodes] == ["mul", "mul", "write", "fused[add,mul]"]
    x, w0 = _x(3), w._data.copy()
    np.testing.assert_allclose(runner((x,))._data, (x._data * w0 + 1) * (2 * w0), rtol=1e-12)


def test_compile_fuses_only_on_cuda(device):
    def f(x):
        return ((x * 3).sin() + x).sigmoid() * x.cos()

    compiled = dt.compile(f)
    x = dt.randn(5, 4, dtype=dt.float64, device=device)
    for _ in range(2):
        np.testing.assert_allclose(dt.Tensor.cpu(compiled(x))._data,
                                   dt.Tensor.cpu(f(x))._data, rtol=1e-12)
    fused = [n.name() for n in compiled.graphs[0].nodes if n.name().startswith("fused[")]
    assert bool(fused) == (device == "cuda")
