"""The memory planner's table of forwards that take `out=` (jit/memory_plan.py) matches the
ops: every entry is a registry op whose forward takes `out`, and every registry forward that
takes `out` is planned (a table entry or a generated ufunc forward); a view op is planned
only where its recorded call copied."""
import inspect

import numpy as np

import dtrain as dt
import dtrain.nn  # noqa: F401  (registers conv, pooling, linear)
from dtrain.autograd.registry import REGISTRY
from dtrain.jit.memory_plan import COPY, IN_PLACE, INTO, OUT, out_mode


def _takes_out(op):
    return "out" in inspect.signature(op.forward).parameters


def test_every_table_entry_is_a_registry_op_whose_forward_takes_out():
    for name, mode in OUT.items():
        assert mode in (INTO, IN_PLACE, COPY)
        assert name in REGISTRY and _takes_out(REGISTRY[name].op), name


def test_every_forward_that_takes_out_is_planned_and_only_those():
    ops = [info.op for info in REGISTRY.values() if info.op is not None]
    assert {op.op_name for op in ops if _takes_out(op)} == \
        {op.op_name for op in ops if out_mode(op) is not None}
    assert out_mode(REGISTRY["add"].op) == IN_PLACE and out_mode(REGISTRY["conv"].op) == INTO


def test_a_reshape_is_planned_only_where_it_copied():
    """A reshape that returned a view of its input stays a view in replay; one that copied
    (a transposed input) writes its copy into a planned buffer, with the same values."""
    def f(x):
        return (x.reshape(-1) * 2).sum() + (x.t().reshape(-1) * x.reshape(-1)).sum()
    compiled = dt.compile(f, passes=("memory_plan",))
    x = dt.tensor(np.arange(12.0).reshape(3, 4))
    for _ in range(3):
        np.testing.assert_allclose(compiled(x)._data, f(x)._data)
    runner = compiled.entries[next(iter(compiled.entries))].runner
    reshapes = [i for i, n in enumerate(runner.graph.nodes)
                if n.kind == "op" and n.op.op_name == "reshape"]
    assert [i in runner.plan for i in reshapes] == [False, True, False]
