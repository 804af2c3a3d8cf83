"""Graph mode: record a function's registry ops once, optimize the graph, replay it.

    step = dt.compile(train_step)        # one graph per input signature, guards re-record
    traced = dt.jit.trace(model, (x,))   # a single-signature graph; print(traced.graph)
    dt.jit.save(traced, "model.dtj"); served = dt.jit.load("model.dtj")

What is captured: every registry op (forward, and the backward's ops when the function
calls `backward()`), leaf-gradient accumulation with its hooks and the backward callbacks
(DDP's all-reduce), in-place writes, and `optimizer.step()` / `zero_grad()` /
`scheduler.step()` / GradScaler's `unscale_()`, `step()` and `update()` as opaque calls
(the scaler's scale is a tensor the graph reads by reference). Random ops of the registry
(dropout's mask) draw anew on every replay, from the same generator stream as eager calls.
What is not captured, and is reported (`TraceError`, or eager with `fallback="eager"`):
Python reading tensor values (`.item()`, `bool()`, ...), values computed with NumPy outside
the registry that change between calls (e.g. a mask drawn with NumPy; found by recording
each signature twice), in-place changes to a compiled module's state outside the registry,
`backward(create_graph=True)` and `optimizer.step(closure)`. A compiled callable is not
thread-safe.
"""
from dtrain.jit.compiler import CompiledFunction, TracedFunction, compile, trace  # noqa: F401
from dtrain.jit.export import load, save  # noqa: F401
from dtrain.jit.graph import Graph  # noqa: F401
from dtrain.jit.passes import PASSES  # noqa: F401
from dtrain.jit.tracer import TraceError  # noqa: F401
