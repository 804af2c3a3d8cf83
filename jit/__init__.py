"""Graph mode: record a function's registry ops once, optimize the graph, replay it.

    step = dt.compile(train_step)        # one graph per input signature, guards re-record
    net.body = dt.compile(net.body)      # a module compiles into a Module (torch's habits)
    traced = dt.jit.trace(model, (x,))   # a single-signature graph; print(traced.graph)
    dt.jit.save(traced, "model.dtj"); served = dt.jit.load("model.dtj")

How the seam works. Eager code reports to one observer on the thread-local autograd state
(`dtrain.autograd.observer`; None in eager mode, one attribute test per event): every op
application (`Op.apply`), in-place write, leaf-gradient accumulation, end-of-backward
callback and host read (`item`, `tolist`, `numpy`), and every call of an `@effect` method.
Recording a call installs a `Tracer` (tracer.py) as that observer, as JAX's `bind` hands each
primitive to the current interpreter:
- What an op declares: one `Op` class (forward on arrays, backward on tensors, registered
  with samples) and `saves`, what its backward keeps: "inputs", "output" and the names of
  the arrays forward stores on the node (a mask, a max's winning taps). The tracer records
  the op class, its arguments and params, its outputs, and exactly those declared arrays
  (the stash, via `node.saved_state()`, which activation checkpointing reads too; a
  registry test fails for an undeclared array attribute). Backward formulas are written
  with registry ops on those values, so the ops of `backward()` are recorded too; the
  engine's own work is registry ops as well (summing a broadcast gradient back to its
  input's shape, casting it to the input's dtype). Nothing is computed on arrays outside
  the registry (losses gather instead of building one-hot matrices, clip_grad_norm_'s norm
  and coefficient are tensors).
- Which recorded ops write into preallocated buffers at replay is graph mode's decision:
  memory_plan.py's table (the generated single-ufunc forwards, matmul, linear, conv,
  pooling, a few activations, the small ops of cross-entropy and dropout's mask take `out=`;
  a reshape that copied writes its copy there), read by the memory plan in passes.py: a
  replayed MLP or CNN training step allocates no array but the loss it returns.
- Effects are marked, not discovered: `Optimizer.step`/`zero_grad`, `LRScheduler.step`,
  `Module.zero_grad`/`train`, DDP's switch of `no_sync` and GradScaler's
  `unscale_`/`step`/`update` are `@effect`s (an optimizer subclass's override too, via
  `__init_subclass__`). The tracer records each as one call and runs it
  unobserved; replay calls it again with the same arguments, so its Python state (learning
  rates, the scaler's growth tracker) moves on every replay. State that the graph's ops read
  is a tensor read by reference (parameters, buffers, GradScaler's scale).
- What replays (executor.py): the recorded ops' forwards on arrays (the stash of a node
  that backward ops read is refreshed from its forward), and the effects: writes,
  accumulation into `.grad` with its hooks, the callbacks (DDP's all-reduce), the calls.
  Random ops (`Op.random`: dropout, RReLU, and `Draw`, which makes every random tensor:
  `dt.randn`, `randn_like`, `Tensor.normal_`...) draw anew on every replay, from the same
  generator stream as eager calls.

An effect call is opaque: the graph does not see which tensors it changes, so no pass moves
or merges ops across it (the forward of an evaluation after `opt.step()` is not the
training forward again).

What cannot be captured raises `TraceError` (or runs eagerly with `fallback="eager"`) while
the first call records: Python reading a traced value (`.item()`, `bool()`, a branch on
data such as prod's gradient with zeros), an op whose result's shape depends on traced
values (`Op.shape_from_data`: nonzero, unique, indexing with a boolean mask computed in
the function, masked_select; a graph replays static shapes), an effect called with a closure or
tensor argument (`optimizer.step(closure)`, LBFGS), `backward(create_graph=True)`, in-place
changes to a compiled module's state outside the registry, an optimizer hyperparameter
assigned by Python code (`group["lr"] = ...`; a scheduler's step is an effect). Other Python
side effects (a counter in a closure) run only while recording: keep them outside. A value
computed with NumPy outside the registry that changes between calls is found by recording
each signature twice. A compiled callable is not thread-safe.
"""
from dtrain.jit.compiler import CompiledFunction, TracedFunction, compile, trace  # noqa: F401
from dtrain.jit.export import load, save  # noqa: F401
from dtrain.jit.graph import Graph  # noqa: F401
from dtrain.jit.passes import PASSES  # noqa: F401
from dtrain.jit.tracer import TraceError  # noqa: F401
