"""Containers: `Sequential`, `ModuleList`, `ModuleDict`, `ParameterList`, `ParameterDict`.

Entries are registered under their index ("0", "1", ...) or key, so state-dict keys are
torch's (`features.0.weight`).
"""
import operator
from collections import OrderedDict

from dtrain.core.tensor import Tensor
from dtrain.nn.module import Module
from dtrain.nn.parameter import Parameter


def _index(idx, n, kind):
    """A non-negative position for `idx` in a container of length n."""
    idx = operator.index(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range ({kind} of length {n})")
    return idx % n


class _IndexedModules(Module):
    """Shared list behaviour of Sequential and ModuleList: modules stored under "0", "1"..."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self._slice(list(self._modules.items())[idx])
        return list(self._modules.values())[_index(idx, len(self), type(self).__name__)]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index(idx, len(self), type(self).__name__)]
        self.add_module(key, module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        doomed = keys[idx] if isinstance(idx, slice) else \
            [keys[_index(idx, len(keys), type(self).__name__)]]
        for k in doomed:
            del self._modules[k]
        self._renumber()

    def _renumber(self):
        """Keep the keys "0".."n-1" after a deletion or insertion (as torch)."""
        mods = list(self._modules.values())
        self._modules.clear()
        for i, m in enumerate(mods):
            self._modules[str(i)] = m

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)

    def pop(self, key=-1):
        module = self[key]
        del self[key]
        return module

    def __dir__(self):
        return [k for k in super().__dir__() if not k.isdigit()]


class Sequential(_IndexedModules):
    """Runs its modules in order, each output feeding the next: `Sequential(a, b, c)` or
    `Sequential(OrderedDict([("name", a), ...]))` (named entries)."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def _slice(self, items):
        return type(self)(OrderedDict(items))

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input


class ModuleList(_IndexedModules):
    """A list of modules whose parameters the parent registers; it has no forward."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _slice(self, items):
        return type(self)([m for _, m in items])

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList(list(self) + list(other))


class _Mapping:
    """dict access to one Module store (`_store`: "_modules" or "_parameters"); entries are
    set through `__setitem__`, which registers them."""

    _store = ""

    def _entries(self):
        return self.__dict__[self._store]

    def __getitem__(self, key):
        return self._entries()[key]

    def __delitem__(self, key):
        del self._entries()[key]

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries())

    def __contains__(self, key):
        return key in self._entries()

    def clear(self):
        self._entries().clear()

    def pop(self, key):
        value = self._entries()[key]
        del self[key]
        return value

    def keys(self):
        return self._entries().keys()

    def items(self):
        return self._entries().items()

    def values(self):
        return self._entries().values()

    def update(self, entries):
        for key, value in entries.items() if hasattr(entries, "items") else entries:
            self[key] = value


class ModuleDict(_Mapping, Module):
    """An ordered dict of modules, registered under their keys."""

    _store = "_modules"

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __setitem__(self, key, module):
        self.add_module(key, module)


def _as_parameter(value):
    """Tensors become Parameters (as torch's ParameterList/Dict do); Parameters stay."""
    if isinstance(value, Tensor) and not isinstance(value, Parameter):
        return Parameter(value)
    return value


def _param_repr(p):
    size = "x".join(str(s) for s in p.shape)
    return f"Parameter containing: [dtrain.{p.dtype.name} of size {size}]"


class ParameterList(Module):
    """A list of Parameters registered under "0", "1", ..."""

    def __init__(self, values=None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList(list(self._parameters.values())[idx])
        return self._parameters[str(_index(idx, len(self), "ParameterList"))]

    def __setitem__(self, idx, param):
        self.register_parameter(str(_index(idx, len(self), "ParameterList")),
                                _as_parameter(param))

    def append(self, value):
        self.register_parameter(str(len(self)), _as_parameter(value))
        return self

    def extend(self, values):
        for v in values:
            self.append(v)
        return self

    def __iadd__(self, values):
        return self.extend(values)

    def extra_repr(self):
        return "\n".join(f"({k}): {_param_repr(p)}" for k, p in self._parameters.items())


class ParameterDict(_Mapping, Module):
    """An ordered dict of Parameters registered under their keys."""

    _store = "_parameters"

    def __init__(self, parameters=None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __setitem__(self, key, value):
        self.register_parameter(key, _as_parameter(value))

    def get(self, key, default=None):
        return self._parameters.get(key, default)

    def extra_repr(self):
        return "\n".join(f"({k}): {_param_repr(p)}" for k, p in self._parameters.items())
