"""Every public function of `dtrain` and `dtrain.nn.functional`, and every public Tensor
method and property, has a docstring (an alias is the same object, so it shares its target's)."""
import inspect

import pytest

import dtrain as dt
import dtrain.nn.functional as F


def _public(namespace):
    return [(name, value) for name, value in namespace.items()
            if not name.startswith("_") and callable(value) and not inspect.ismodule(value)]


def _undocumented(items):
    return sorted(name for name, value in items if not (inspect.getdoc(value) or "").strip())


@pytest.mark.parametrize("namespace", ["dtrain", "dtrain.nn.functional"])
def test_public_functions_have_docstrings(namespace):
    module = {"dtrain": dt, "dtrain.nn.functional": F}[namespace]
    assert _undocumented(_public(vars(module))) == []


def test_tensor_methods_have_docstrings():
    items = [(n, v.fget if isinstance(v, property) else v) for n, v in vars(dt.Tensor).items()]
    assert _undocumented(_public(dict(items))) == []


def test_a_function_without_docstring_is_reported():
    def documented():
        """Doc."""
    assert _undocumented([("bare", lambda x: x), ("documented", documented)]) == ["bare"]
