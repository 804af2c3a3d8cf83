"""Parametrizations, as `torch.nn.utils.parametrize`: a module's tensor (say `weight`)
becomes a function of stored originals, recomputed each time it is read.

`register_parametrization(m, "weight", P())` moves the tensor to
`m.parametrizations.weight.original` (or `original0`, `original1`, ... when
`P.right_inverse` returns several tensors) and gives `m`'s class a property `weight` that
returns `P(original)`. The state-dict keys are PyTorch's. Assigning `m.weight = t` stores
`P.right_inverse(t)` in the originals.
"""
import contextlib

from dtrain.autograd.grad_mode import no_grad
from dtrain.core.tensor import Tensor
from dtrain.nn.containers import ModuleDict, ModuleList
from dtrain.nn.parameter import Parameter

_cache = {"enabled": 0, "values": {}}


@contextlib.contextmanager
def cached():
    """Compute each parametrized tensor once inside the block (e.g. for an RNN's steps)."""
    _cache["enabled"] += 1
    try:
        yield
    finally:
        _cache["enabled"] -= 1
        if not _cache["enabled"]:
            _cache["values"].clear()


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor, applied in order, and their originals."""

    def __init__(self, modules, original, unsafe=False):
        super().__init__(modules)
        self.unsafe = unsafe
        new = original
        with no_grad():
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    new = module.right_inverse(new)
        self.is_tensor = isinstance(new, Tensor)
        if self.is_tensor:
            if not unsafe and (new.shape != original.shape or new.dtype != original.dtype):
                raise ValueError(f"right_inverse must keep the shape and dtype of the tensor "
                                 f"({tuple(original.shape)}, {original.dtype}); got "
                                 f"({tuple(new.shape)}, {new.dtype}). Pass unsafe=True to allow it")
            self._store("original", original, new)
        else:
            self.ntensors = len(new)
            for i, t in enumerate(new):
                self._store(f"original{i}", original, t)

    def _store(self, name, original, value):
        """Keep `value` as an original: in the given Parameter itself when it is that very
        tensor (optimizers built before keep working), else as a new Parameter/buffer."""
        if value is original and isinstance(original, Parameter):
            setattr(self, name, original)
        elif isinstance(original, Parameter):
            setattr(self, name, Parameter(value.detach().clone(), original.requires_grad))
        else:
            self.register_buffer(name, value.detach().clone())

    def right_inverse(self, value):
        """Store the originals that `value` corresponds to (for `module.weight = value`)."""
        with no_grad():
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    value = module.right_inverse(value)
            values = (value,) if self.is_tensor else tuple(value)
            names = ["original"] if self.is_tensor else [f"original{i}"
                                                         for i in range(self.ntensors)]
            for name, v in zip(names, values):
                getattr(self, name).copy_(v)

    def forward(self):
        if self.is_tensor:
            x = self[0](self.original)
        else:
            x = self[0](*(getattr(self, f"original{i}") for i in range(self.ntensors)))
        for module in list(self)[1:]:
            x = module(x)
        return x


def _parametrized_class(module):
    """Give `module` its own subclass (once), where the parametrized properties live."""
    cls = type(module)
    if getattr(cls, "_is_parametrized_class", False):
        return cls

    def __setattr__(self, name, value):
        if is_parametrized(self, name):
            object.__setattr__(self, name, value)  # the property: right_inverse
        else:
            cls.__setattr__(self, name, value)

    new = type(f"Parametrized{cls.__name__}", (cls,),
               {"_is_parametrized_class": True, "__setattr__": __setattr__})
    module.__class__ = new
    return new


def _property(tensor_name):
    def get(self):
        key = (id(self), tensor_name)
        if _cache["enabled"]:
            if key not in _cache["values"]:
                _cache["values"][key] = self.parametrizations[tensor_name]()
            return _cache["values"][key]
        return self.parametrizations[tensor_name]()

    def set_(self, value):
        self.parametrizations[tensor_name].right_inverse(value)
    return property(get, set_)


def register_parametrization(module, tensor_name, parametrization, *, unsafe=False):
    """Parametrize `module.<tensor_name>` by `parametrization` (a Module); a second call on
    the same tensor appends to its list. Returns `module`."""
    if is_parametrized(module, tensor_name):
        module.parametrizations[tensor_name].append(parametrization)
        return module
    stores = module.__dict__
    if tensor_name in stores["_parameters"] or tensor_name in stores["_buffers"]:
        original = getattr(module, tensor_name)
    else:
        raise ValueError(f"Module '{type(module).__name__}' does not have a parameter, a buffer, "
                         f"or a parametrized element with name '{tensor_name}'")
    plist = ParametrizationList([parametrization], original, unsafe=unsafe)
    delattr(module, tensor_name)
    if "parametrizations" not in stores["_modules"]:
        module.parametrizations = ModuleDict()
    module.parametrizations[tensor_name] = plist
    setattr(_parametrized_class(module), tensor_name, _property(tensor_name))
    return module


def is_parametrized(module, tensor_name=None):
    plists = module.__dict__.get("_modules", {}).get("parametrizations")
    if plists is None or not isinstance(plists, ModuleDict):
        return False
    return len(plists) > 0 if tensor_name is None else tensor_name in plists


def remove_parametrizations(module, tensor_name, leave_parametrized=True):
    """Undo `register_parametrization`: `module.<tensor_name>` becomes a plain Parameter
    again, holding the parametrized value (or, with leave_parametrized=False, the
    original)."""
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"Module {type(module).__name__} does not have a parametrization on "
                         f"{tensor_name}")
    plist = module.parametrizations[tensor_name]
    if leave_parametrized:
        with no_grad():
            value = getattr(module, tensor_name)
        original = plist.original if plist.is_tensor else None
        if original is not None and original.shape == value.shape:
            with no_grad():
                original.copy_(value)
        else:
            original = Parameter(value.detach().clone())
    else:
        if not plist.is_tensor:
            raise ValueError("Cannot leave unparametrized (`leave_parametrized=False`) a tensor "
                             "that is parametrized in terms of a sequence of tensors.")
        original = plist.original
    cls = type(module)
    delattr(cls, tensor_name)
    del module.parametrizations[tensor_name]
    if not is_parametrized(module):
        del module.parametrizations
        module.__class__ = cls.__bases__[0]
    if isinstance(original, Parameter):
        module.register_parameter(tensor_name, original)
    else:
        module.register_buffer(tensor_name, original)
    return module
