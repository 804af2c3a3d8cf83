"""Attach the registry ops to `Tensor` as methods and operators, plus in-place variants,
conversions and the autograd entry points (`backward`, hooks). Imported once by
`dtrain.autograd`; `core` itself stays free of autograd logic."""
import inspect
import weakref

import numpy as np

from dtrain.autograd import node as _node
from dtrain.autograd.grad_mode import no_grad, state
from dtrain.autograd.node import StateHookHandle
from dtrain.autograd.ops import (
    convert,
    index,
    linalg,
    pointwise,
    products,
    rearrange,
    reduce,
    sampling,
    scan,
    shape,
    sorting,
    sparse,
)
from dtrain.autograd.ops import matrix as Mx
from dtrain.autograd.ops import special as M
from dtrain.autograd.ops import stats as St
from dtrain.core import backend, creation
from dtrain.core import dtype as dtypes
from dtrain.core.tensor import Tensor

P, R, S, X, L = pointwise, reduce, shape, index, linalg
# elementwise math with an in-place `name_` variant too
_MATH = ("tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "arcsin",
         "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "expm1", "log2", "log10",
         "exp2", "erf", "erfc", "erfinv", "lgamma", "digamma", "frac", "deg2rad", "rad2deg",
         "logit", "nan_to_num", "clamp_min", "clamp_max", "atan2", "arctan2", "hypot", "fmod",
         "xlogy", "copysign")

METHODS = {
    **{name: getattr(P, name) for name in (
        "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "pow",
        "maximum", "minimum", "neg", "negative", "exp", "log", "log1p", "sqrt", "rsqrt",
        "square", "reciprocal", "abs", "sin", "cos", "tanh", "sigmoid", "relu", "clamp", "clip",
        "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
        "logical_not", "isnan", "isinf", "isfinite", "sign", "floor", "ceil", "trunc", "round",
        "floor_divide", "remainder", "nonzero", "argwhere", "allclose", "isclose", "equal")},
    **{name: getattr(R, name) for name in (
        "sum", "mean", "var", "std", "prod", "amax", "amin", "max", "min", "argmax", "argmin",
        "logsumexp", "softmax", "log_softmax", "all", "any", "count_nonzero")},
    **{name: getattr(S, name) for name in (
        "reshape", "view", "flatten", "unflatten", "permute", "transpose", "swapaxes",
        "swapdims", "t", "squeeze", "unsqueeze", "expand", "expand_as", "broadcast_to",
        "sum_to_size", "narrow", "split", "chunk", "unbind", "clone", "contiguous")},
    **{name: getattr(X, name) for name in ("gather", "scatter_add", "index_select",
                                           "masked_fill")},
    **{name: getattr(L, name) for name in ("matmul", "mm", "bmm", "dot", "outer", "diag",
                                           "tril", "triu", "norm")},
    **{name: getattr(module, name) for module, names in (
        (sorting, ("sort", "argsort", "msort", "topk", "kthvalue", "median", "nanmedian", "mode",
                   "unique", "unique_consecutive")),
        (scan, ("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp", "diff")),
        (rearrange, ("flip", "fliplr", "flipud", "roll", "rot90", "repeat", "tile",
                     "repeat_interleave", "diagonal", "diag_embed", "trace", "movedim",
                     "moveaxis", "select", "take", "take_along_dim", "masked_select")),
        (products, ("kron", "inner", "mv", "addmm", "addmv", "baddbmm", "addbmm", "addcmul",
                    "addcdiv", "lerp", "cross", "dist"))) for name in names},
    "unfold": rearrange.unfold,
    **{name: getattr(M, name) for name in _MATH + ("float_power", "logaddexp", "logaddexp2",
                                                    "sgn", "heaviside")},
    **{name: getattr(St, name) for name in ("nansum", "nanmean", "quantile", "nanquantile",
                                            "histc", "bincount", "isin")},
    **{name: getattr(Mx, name) for name in ("inverse", "det", "slogdet", "logdet",
                                             "matrix_power", "cholesky", "svd", "pinverse")},
    "to_sparse": sparse.to_sparse, "to_dense": sparse.to_dense,
    "bernoulli": sampling.bernoulli, "multinomial": sampling.multinomial,
    **{name: getattr(X, name) for name in ("index_add", "index_copy", "index_fill",
                                           "index_put", "put", "masked_scatter", "scatter",
                                           "scatter_reduce")},
    "hardshrink": P.hardshrink,
}


def _where(self, condition, other):
    """Elementwise `self if condition else other`."""
    return P.where(condition, self, other)


def view_as(self, other):
    """A view of self with `other`'s shape."""
    return S.view(self, other._data.shape)


def reshape_as(self, other):
    """Self reshaped to `other`'s shape."""
    return S.reshape(self, other._data.shape)


METHODS.update(where=_where, view_as=view_as, reshape_as=reshape_as)

OPERATORS = {
    # Binary-operator slots drop `self` for non-function callables, hence the lambdas;
    # `_f` binds each apply once.
    "__add__": lambda a, b, _f=P.Add.apply: _f(a, b),
    "__radd__": lambda a, b, _f=P.Add.apply: _f(b, a),
    "__sub__": lambda a, b, _f=P.Sub.apply: _f(a, b),
    "__rsub__": lambda a, b, _f=P.Sub.apply: _f(b, a),
    "__mul__": lambda a, b, _f=P.Mul.apply: _f(a, b),
    "__rmul__": lambda a, b, _f=P.Mul.apply: _f(b, a),
    "__truediv__": lambda a, b, _f=P.Div.apply: _f(a, b),
    "__rtruediv__": lambda a, b, _f=P.Div.apply: _f(b, a),
    "__pow__": lambda a, b, _f=P.Pow.apply: _f(a, b),
    "__rpow__": lambda a, b, _f=P.Pow.apply: _f(b, a),
    "__matmul__": L.matmul, "__rmatmul__": lambda a, b: L.matmul(b, a),
    "__neg__": P.neg, "__pos__": lambda a: a, "__abs__": P.abs,
    "__eq__": P.eq, "__ne__": P.ne, "__lt__": P.lt, "__le__": P.le, "__gt__": P.gt,
    "__ge__": P.ge,
    "__floordiv__": P.floor_divide, "__rfloordiv__": lambda a, b: P.floor_divide(b, a),
    "__mod__": P.remainder, "__rmod__": lambda a, b: P.remainder(b, a),
    "__and__": P.bitwise_and, "__or__": P.bitwise_or, "__invert__": P.bitwise_not,
    "__xor__": P.logical_xor,
    "__getitem__": X.getitem,
}


# -- in-place operations ---------------------------------------------------------------------
def _write(self, result):
    """Copy `result` (an array) into `self` in place, with PyTorch's dtype/shape rules."""
    data = self._data
    _check_fits(data, result)
    if state.observer is not None:  # autograd/observer.py (before: it may keep the old data)
        state.observer.write(self, result)
    try:
        backend.array_module(data).copyto(data, result, casting="unsafe")
    except ValueError as err:  # read-only, e.g. the result of expand()
        raise RuntimeError(f"unsupported operation: cannot write into this tensor in place "
                           f"({err}); clone() it first") from None
    self._version[0] += 1


def _check_fits(data, result):
    if result.shape != data.shape:
        raise RuntimeError(f"output with shape {list(data.shape)} doesn't match the broadcast "
                           f"shape {list(result.shape)}")
    if result.dtype != data.dtype and not np.can_cast(result.dtype, data.dtype, "same_kind"):
        raise RuntimeError(f"result type {dtypes.from_np(result.dtype)} can't be cast to the "
                           f"desired output type {dtypes.from_np(data.dtype)}")


def _commit(self, res):
    """Make `self` hold `res`, a recorded result computed from it: its values and history.
    A view instead rebases its base's history (the base becomes a CopySlices of `res` into
    it) and becomes a view of the new base, as in PyTorch, so that gradients through the
    base and through any of its views see the change."""
    if not _node.is_differentiable_view(self):
        _write(self, res._data)
        self.grad_fn, self._output_nr, self.requires_grad = res.grad_fn, res._output_nr, True
        return
    _check_fits(self._data, res._data)
    base = self._base
    old = Tensor._make(base._data, base.requires_grad, base.grad_fn, base._output_nr)
    new = index.CopySlices.apply(old, res, self._view[0])
    _write(base, new._data)
    base.grad_fn, base._output_nr, base.requires_grad = new.grad_fn, 0, True
    _node.refresh_view(self)


def _recording(self, args):
    if not state.enabled:
        return False
    if _node.is_differentiable_view(self):  # its base may have a newer history
        _node.refresh_view(self)
    return self.requires_grad or any(isinstance(a, Tensor) and a.requires_grad for a in args)


def _check_inplace(self):
    """Refuse in-place changes of leaves that require grad and of their views."""
    if self.grad_fn is None and self.requires_grad:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                           "operation.")
    base = self._base
    if _node.is_differentiable_view(self) and base.requires_grad and base.grad_fn is None:
        raise RuntimeError("a view of a leaf Variable that requires grad is being used in an "
                           "in-place operation.")


def inplace(self, fn, args, kwargs=None, reads_self=True):
    """Run out-of-place `fn(self, *args)` and write the result into `self`.

    When recording, `self` takes over the result's graph node; the node sees a snapshot of
    the old `self` (a copy only if backward reads it: `reads_self`)."""
    kwargs = kwargs or {}
    if not _recording(self, args):
        with no_grad():
            _write(self, fn(self, *args, **kwargs)._data)
        return self
    _check_inplace(self)
    old = Tensor._make(self._data.copy() if reads_self else self._data, self.requires_grad,
                       self.grad_fn, self._output_nr)
    if reads_self and state.observer is not None:  # autograd/observer.py
        state.observer.snapshot(self, old)
    _commit(self, fn(old, *args, **kwargs))
    return self


def setitem(self, key, value):
    """`self[key] = value`, recorded as an IndexPut node when gradients flow."""
    xp = backend.array_module(self._data)
    key = index.normalize_key(key, xp)
    if not _recording(self, (value,)):
        if state.observer is not None:  # autograd/observer.py (before: it may keep the old data)
            state.observer.setitem(self, key, value)
        try:
            v = value._data if isinstance(value, Tensor) else value
            self._data[key] = index.fit_value(v, self._data[key])
        except ValueError as err:
            raise RuntimeError(f"setitem: {err} (tensor {list(self._data.shape)})") from None
        self._version[0] += 1
        return
    _check_inplace(self)
    old = Tensor._make(self._data, self.requires_grad, self.grad_fn, self._output_nr)
    _commit(self, index.IndexPut.apply(old, value, key))


def _polygamma(self, n):
    """The n-th derivative of the digamma function, elementwise."""
    return M.polygamma(n, self)


METHODS["polygamma"] = _polygamma

# name -> (function, backward reads the old self)
INPLACE = {
    "add_": (P.add, False), "sub_": (P.sub, False), "mul_": (P.mul, True),
    "div_": (P.div, True), "pow_": (P.pow, True), "clamp_": (P.clamp, True),
    "clip_": (P.clamp, True), "masked_fill_": (X.masked_fill, False),
    "exp_": (P.exp, False), "log_": (P.log, True), "sqrt_": (P.sqrt, False),
    "abs_": (P.abs, True), "neg_": (P.neg, False), "relu_": (P.relu, False),
    "sigmoid_": (P.sigmoid, False), "tanh_": (P.tanh, False), "sin_": (P.sin, True),
    "cos_": (P.cos, True), "scatter_add_": (X.scatter_add, False),
    "index_add_": (X.index_add, False), "index_copy_": (X.index_copy, False),
    "index_fill_": (X.index_fill, False), "index_put_": (X.index_put, False),
    "put_": (X.put, False), "masked_scatter_": (X.masked_scatter, False),
    "scatter_": (X.scatter, True), "scatter_reduce_": (X.scatter_reduce, True),
    "addcmul_": (products.addcmul, False), "addcdiv_": (products.addcdiv, False),
    "lerp_": (products.lerp, False), "cumsum_": (scan.cumsum, False),
    "cumprod_": (scan.cumprod, True),
    **{name + "_": (getattr(M, name), True) for name in _MATH},
    "polygamma_": (_polygamma, True),
}


def _make_inplace(fn, reads_self):
    def method(self, *args, **kwargs):
        return inplace(self, fn, args, kwargs, reads_self)
    method.__name__ = fn.__name__ + "_"
    method.__doc__ = f"In-place `{fn.__name__}`; returns self."
    method.__wrapped__ = fn  # inspect.signature (stubs.py) shows fn's parameters
    return method


def fill_(self, value):
    """Set every element to `value`, in place; returns self."""
    setitem(self, Ellipsis, value)
    return self


def zero_(self):
    """Set every element to 0, in place; returns self."""
    return fill_(self, 0)


def apply_(self, callable):
    """Replace each element x by `callable(x)`, in place: a Python call per element, CPU
    only (as torch; for tests and small tensors, not for hot paths)."""
    if self.device.type != "cpu":
        raise TypeError("apply_ is only implemented on CPU tensors")
    with no_grad():
        _write(self, np.vectorize(callable, otypes=[self._data.dtype])(self._data))
    return self


def copy_(self, src, non_blocking=False):
    """Copy `src` (broadcast, cast, moved to this device) into self."""
    if isinstance(src, Tensor) and src.device != self.device:
        src = src.to(self.device)
    setitem(self, Ellipsis, src)
    return self


def _random_fill(kind):
    """The in-place method `kind` (uniform_, normal_...): fills self with the registry op
    `Draw` of that kind (sampling.py), from `generator` or the default generator of self's
    device, so that graph mode records the draw and replays draw anew."""
    sample = sampling.SAMPLERS[kind]

    def method(self, *args, generator=None, **kwargs):
        if self.requires_grad and self.grad_fn is None and state.enabled:
            _check_inplace(self)  # as torch: a leaf that requires grad is filled under no_grad
        with no_grad():
            values = sampling.Draw.apply(self, *args, kind=kind, generator=generator, **kwargs)
            _write(self, values.to(self.dtype)._data)  # cast as PyTorch's fills do
        return self
    params = list(inspect.signature(sample).parameters.values())
    method.__signature__ = inspect.Signature([
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params[2:],
        inspect.Parameter("generator", inspect.Parameter.KEYWORD_ONLY, default=None)])
    method.__name__ = kind
    method.__doc__ = sample.__doc__
    return method


# -- conversions ----------------------------------------------------------------------------
def to(self, *args, dtype=None, device=None, copy=False, non_blocking=False):
    """`to(device)`, `to(dtype)`, `to(device, dtype)`, `to(other_tensor)`; keeps the graph."""
    for a in args:
        if isinstance(a, Tensor):
            dtype, device = a.dtype, a.device
        elif isinstance(a, (str, backend.device, int)) and not dtypes.is_dtype_spec(a):
            device = a
        else:
            dtype = a
    t = self
    if device is not None:
        dev = backend.normalize_device(device)
        if dev != t.device or copy:
            t = convert.ToDevice.apply(t, dev)
    if dtype is not None:
        npd = dtypes.to_np(dtype)
        if npd != t._data.dtype:
            if npd.kind != "f":  # integer results never carry gradients
                with no_grad():  # an op (not a bare astype) so that dtrain.jit records it
                    return convert.Cast.apply(t, npd)
            t = convert.Cast.apply(t, npd)
    if copy and t is self:
        t = S.clone(self)
    return t


# through `self.to`, which sparse tensors override
def cpu(self):
    """Self on the CPU (self if it is there)."""
    return self.to("cpu")


def cuda(self, device=None):
    """Self on a CUDA device (the current one unless given)."""
    return self.to("cuda" if device is None else backend.device(device))


def type_as(self, other):
    """Self converted to `other`'s dtype."""
    return to(self, other.dtype)


def T(self):
    """Self with all dimensions reversed."""
    return S.permute(self, *reversed(range(self._data.ndim)))


def mT(self):
    """Self with its last two dimensions swapped (a batch of transposed matrices)."""
    return S.transpose(self, -2, -1)


def type_(self, dtype=None, non_blocking=False):
    """No argument: torch's type string, e.g. "torch.FloatTensor" ("torch.cuda.FloatTensor"
    on a GPU). With one: this tensor converted to a dtype, a type string ("torch.LongTensor",
    "dtrain.cuda.FloatTensor") or a legacy type (`dt.DoubleTensor`)."""
    if dtype is None:
        return dtypes.legacy_type_name(self.dtype, self.is_cuda)
    if isinstance(dtype, creation.LegacyTensorType):
        return to(self, "cpu", dtype.dtype)
    if isinstance(dtype, str) and dtype.endswith("Tensor"):
        d, cuda = dtypes.parse_legacy_type(dtype)
        return to(self, "cuda" if cuda else "cpu", d)
    return to(self, dtype)


def _cast(d):
    def method(self):
        return self.to(d)
    method.__name__ = d.name
    method.__doc__ = f"Self converted to {d} (self if it already is)."
    return method


def _new(factory):
    def method(self, *size, dtype=None, device=None, requires_grad=False):
        return factory(*size, dtype=dtype or self.dtype, device=device or self.device,
                       requires_grad=requires_grad)
    method.__name__ = "new_" + factory.__name__
    method.__doc__ = (f"A new tensor like `dt.{factory.__name__}(*size)`, of self's dtype and "
                      f"device unless given.")
    return method


def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """A new tensor of `size` filled with `fill_value`, of self's dtype and device unless
    given."""
    return creation.full(size, fill_value, dtype=dtype or self.dtype,
                         device=device or self.device, requires_grad=requires_grad)


def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False):
    """A new tensor copying `data`, of self's dtype and device unless given."""
    return creation.tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                           requires_grad=requires_grad)


# -- autograd entry points ----------------------------------------------------------------
def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate d(self)/d(leaf) into every leaf's `.grad` (see dt.autograd.backward)."""
    from dtrain.autograd.api import backward as run

    run([self], None if gradient is None else [gradient], retain_graph, create_graph, inputs)


def register_hook(self, hook):
    """`hook(grad) -> Tensor or None` runs when this tensor's gradient is computed."""
    if not self.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    if self.grad_fn is not None:
        return self.grad_fn.register_prehook(self._output_nr, hook)
    if self._hooks is None:
        self._hooks = {}
    return StateHookHandle(self._hooks, hook)


def register_post_accumulate_grad_hook(self, hook):
    """`hook(tensor)` runs after a leaf's `.grad` has been updated by backward."""
    if self.grad_fn is not None:
        raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
    if not self.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    if self._post_hooks is None:
        self._post_hooks = {}
    return StateHookHandle(self._post_hooks, hook)


def retain_grad(self):
    """Keep `.grad` for this non-leaf tensor after backward (as leaves do)."""
    if not self.requires_grad:
        raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
    if self.grad_fn is None or retains_grad(self):
        return
    ref = weakref.ref(self)

    def keep(g):
        t = ref()
        if t is not None:
            t.grad = g.detach() if t.grad is None else t.grad + g.detach()
    self.grad_fn.register_prehook(self._output_nr, keep, key=RETAIN)


RETAIN = "retain_grad"


def retains_grad(self):
    """Whether backward keeps `.grad` for this non-leaf tensor (see retain_grad)."""
    fn = self.grad_fn
    return bool(fn is not None and fn._pre_hooks and RETAIN in fn._pre_hooks.get(
        self._output_nr, ()))


def _iter(self):
    """Iterate over the first dimension (slices of shape self.shape[1:])."""
    if self._data.ndim == 0:
        raise TypeError("iteration over a 0-d tensor")
    return iter(S.unbind(self, 0))


def install():
    Tensor.n_outputs = 1  # the engine treats a leaf like a node with one output
    for name, fn in {**METHODS, **OPERATORS}.items():
        setattr(Tensor, name, fn)
    for name, (fn, reads) in INPLACE.items():
        setattr(Tensor, name, _make_inplace(fn, reads))
    for op in ("add", "sub", "mul", "truediv", "pow"):
        setattr(Tensor, f"__i{op}__", getattr(Tensor, {"truediv": "div_"}.get(op, op + "_")))
    Tensor.__setitem__ = setitem
    Tensor.__iter__ = _iter
    Tensor.fill_, Tensor.zero_, Tensor.copy_, Tensor.apply_ = fill_, zero_, copy_, apply_
    for kind in sampling.FILLS:
        setattr(Tensor, kind, _random_fill(kind))
    Tensor.to = to
    Tensor.cpu, Tensor.cuda = cpu, cuda
    for d, names in ((dtypes.float32, ("float",)), (dtypes.float64, ("double",)),
                     (dtypes.float16, ("half",)), (dtypes.int64, ("long",)),
                     (dtypes.int32, ("int",)), (dtypes.bool_, ("bool",)),
                     (dtypes.uint8, ("byte",)), (dtypes.int8, ("char",)),
                     (dtypes.int16, ("short",))):
        for n in names:
            setattr(Tensor, n, _cast(d))
    Tensor.type = type_
    Tensor.type_as = type_as
    Tensor.new_zeros = _new(creation.zeros)
    Tensor.new_ones = _new(creation.ones)
    Tensor.new_empty = _new(creation.empty)
    Tensor.new_full, Tensor.new_tensor = new_full, new_tensor
    Tensor.T, Tensor.mT = property(T), property(mT)
    Tensor.backward = backward
    Tensor.register_hook = register_hook
    Tensor.register_post_accumulate_grad_hook = register_post_accumulate_grad_hook
    Tensor.retain_grad = retain_grad
    Tensor.retains_grad = property(retains_grad)
