"""User-defined differentiable functions, as `torch.autograd.Function`:

    class Cube(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3
        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 3 * x ** 2

    y = Cube.apply(x)
"""
import functools

from dtrain.autograd.grad_mode import no_grad, state
from dtrain.autograd.node import FREED, Node, is_differentiable_view, pack, refresh_view, unpack
from dtrain.autograd.ops.shape import expandable
from dtrain.core import creation
from dtrain.core.tensor import Tensor


class FunctionCtx(Node):
    """The `ctx` of a user Function and the graph node of its outputs."""

    def __init__(self, fn_cls, n_inputs):
        self.fn_cls = fn_cls
        self.needs_input_grad = (False,) * n_inputs
        self._saved = ()
        self._non_diff = set()
        self.materialize_grads = True
        self._freed = False
        self._pre_hooks = None

    @property
    def n_outputs(self):
        return len(self._out_meta)

    def name(self):
        return f"{self.fn_cls.__name__}Backward"

    def save_for_backward(self, *tensors):
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save tensors (or None), got "
                                f"{type(t).__name__}")
        self._saved = tensors

    def mark_non_differentiable(self, *tensors):
        self._non_diff.update(id(t) for t in tensors)

    def set_materialize_grads(self, value):
        self.materialize_grads = bool(value)

    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(FREED)
        return unpack(self._saved, self)

    def release(self):
        self._saved = ()
        self._freed = True

    def backward(self, *grads):
        if self.materialize_grads:
            grads = tuple(creation.zeros(shape, dtype=dt, device=dev) if g is None else g
                          for g, (shape, dt, dev) in zip(grads, self._out_meta))
        result = self.fn_cls.backward(self, *grads)
        if not isinstance(result, tuple):
            result = (result,)
        n = len(self.next_edges)
        if len(result) < n:
            raise RuntimeError(f"function {self.name()} returned an incorrect number of "
                               f"gradients (expected {n}, got {len(result)})")
        result = result[:n]
        for i, (g, shape) in enumerate(zip(result, self.in_shapes)):
            if g is not None and self.needs_input_grad[i]:
                if not isinstance(g, Tensor):
                    raise TypeError(f"function {self.name()} returned a gradient of type "
                                    f"{type(g).__name__} at index {i}; expected a Tensor")
                if not expandable(shape, g._data.shape):  # the engine sums broadcasting back
                    raise RuntimeError(f"Function {self.name()} returned an invalid gradient at "
                                       f"index {i} - got {list(g._data.shape)} but expected shape "
                                       f"compatible with {list(shape)}")
        return result


class Function:
    """Base class for user ops: define static `forward(ctx, *args)` and
    `backward(ctx, *grads)`, then call `apply(*args)` (see the module doc)."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom "
                                  "autograd.Function.")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("You must implement the backward function for custom "
                                  "autograd.Function.")

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = FunctionCtx(cls, len(args))
        if state.enabled:
            for a in args:  # a view whose base changed since it was taken: renew its history
                if isinstance(a, Tensor) and is_differentiable_view(a):
                    refresh_view(a)
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        with no_grad():
            outputs = cls.forward(ctx, *args, **kwargs)
        single = not isinstance(outputs, tuple)
        outs = (outputs,) if single else outputs
        if not (state.enabled and any(ctx.needs_input_grad)):
            return outputs
        ctx._record(args)
        ctx._out_meta = tuple((o._data.shape, o.dtype, o.device) for o in outs)
        wrapped = []
        for i, o in enumerate(outs):
            if not isinstance(o, Tensor):
                wrapped.append(o)
                continue
            if id(o) in ctx._non_diff or o._data.dtype.kind != "f":
                wrapped.append(o)
                continue
            w = Tensor._make(o._data, True, ctx, i, o._version)
            wrapped.append(w)
        # a saved output is kept as the output this node returns (`pack` keeps its parts)
        ctx._saved = pack([next((w for o, w in zip(outs, wrapped) if t is o), t)
                           for t in ctx._saved], ctx)
        return wrapped[0] if single else tuple(wrapped)


def once_differentiable(fn):
    """Decorator for `backward`: it runs on gradients without recording a graph."""
    @functools.wraps(fn)
    def wrapper(ctx, *grads):
        with no_grad():
            return fn(ctx, *grads)
    return wrapper
