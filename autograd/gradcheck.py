"""Numerical gradient checks: finite differences in float64 against autograd.

`gradcheck` compares the full Jacobian from backward with central differences;
`gradgradcheck` does the same for the gradient function (second order); `jvpcheck`
compares forward mode (`functional.jvp`) with a directional difference.
"""
import numpy as np

from dtrain.autograd.api import grad
from dtrain.autograd.functional import jvp
from dtrain.autograd.grad_mode import enable_grad, no_grad
from dtrain.core import backend
from dtrain.core.tensor import Tensor


class GradcheckError(RuntimeError):
    pass


def _outputs(fn, inputs):
    out = fn(*inputs)
    return (out,) if isinstance(out, Tensor) else tuple(o for o in out if isinstance(o, Tensor))


def _diff_inputs(inputs):
    diff = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    for t in diff:
        if t._data.dtype != np.float64:
            raise GradcheckError(f"gradcheck expects float64 inputs that require grad, got "
                                 f"{t.dtype}: float32 finite differences are too noisy")
    if not diff:
        raise GradcheckError("gradcheck: no input requires grad")
    return diff


def _numerical_jacobian(fn, inputs, diff, eps):
    """J[k][i]: d out_k / d diff_i as a (out_k.size, diff_i.size) array, by central differences."""
    with no_grad():
        outs0 = _outputs(fn, inputs)
        jac = [[np.zeros((o._data.size, t._data.size)) for t in diff] for o in outs0]
        for i, t in enumerate(diff):
            flat = t._data.reshape(-1)  # a view: perturb in place
            for j in range(flat.size):
                orig = flat[j].item()
                flat[j] = orig + eps
                plus = [backend.to_device(o._data, backend.CPU).astype(np.float64).ravel()
                        for o in _outputs(fn, inputs)]
                flat[j] = orig - eps
                minus = [backend.to_device(o._data, backend.CPU).astype(np.float64).ravel()
                         for o in _outputs(fn, inputs)]
                flat[j] = orig
                for k, (p, m) in enumerate(zip(plus, minus)):
                    jac[k][i][:, j] = (p - m) / (2 * eps)
    return jac


def _analytical_jacobian(fn, inputs, diff):
    outs = _outputs(fn, inputs)
    jac = [[np.zeros((o._data.size, t._data.size)) for t in diff] for o in outs]
    for k, o in enumerate(outs):
        if not o.requires_grad:
            continue
        for r in range(o._data.size):
            seed = np.zeros(o._data.size)
            seed[r] = 1.0
            g_out = Tensor._make(seed.reshape(o._data.shape).astype(o._data.dtype))
            gs = grad([o], diff, [g_out], retain_graph=True, allow_unused=True)
            for i, g in enumerate(gs):
                if g is not None:
                    jac[k][i][r] = backend.to_device(g._data, backend.CPU).ravel()
    return jac


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """True when backward's Jacobian matches finite differences at `inputs`."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff = _diff_inputs(inputs)
    num = _numerical_jacobian(fn, inputs, diff, eps)
    ana = _analytical_jacobian(fn, inputs, diff)
    for k, (nrow, arow) in enumerate(zip(num, ana)):
        for i, (n, a) in enumerate(zip(nrow, arow)):
            if not np.allclose(a, n, rtol=rtol, atol=atol):
                if not raise_exception:
                    return False
                worst = np.unravel_index(np.argmax(np.abs(a - n)), a.shape)
                raise GradcheckError(
                    f"Jacobian mismatch for output {k} with respect to input {i}:\n"
                    f"numerical:\n{n}\nanalytical:\n{a}\nlargest difference at {worst}: "
                    f"{n[worst]} vs {a[worst]}")
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """gradcheck of the map inputs -> vector-Jacobian product (second derivatives)."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    _diff_inputs(inputs)  # validates dtypes
    rng = np.random.default_rng(seed)
    with no_grad():
        outs = _outputs(fn, inputs)
    vs = [Tensor._make(rng.standard_normal(o._data.shape)) for o in outs]

    def first_order(*xs):
        with enable_grad():
            return _first_order(xs)

    def _first_order(xs):
        ys = _outputs(fn, xs)
        dx = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
        gs = grad(ys, dx, vs, create_graph=True, allow_unused=True, materialize_grads=True)
        return tuple(gs)
    return gradcheck(first_order, inputs, eps, atol, rtol, raise_exception)


def jvpcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Forward-mode check: jvp(fn, inputs, v) against (f(x + eps v) - f(x - eps v)) / 2 eps."""
    inputs = tuple(inputs)
    diff = _diff_inputs(inputs)
    rng = np.random.default_rng(seed)
    tangents = [Tensor._make(rng.standard_normal(t._data.shape)) for t in diff]
    pos = [i for i, t in enumerate(inputs) if any(t is d for d in diff)]

    def on_diff(*xs):
        full = list(inputs)
        for p, x in zip(pos, xs):
            full[p] = x
        return fn(*full)
    _, jv = jvp(on_diff, tuple(diff), tuple(tangents))
    jv = (jv,) if isinstance(jv, Tensor) else jv

    def shifted(sign):
        with no_grad():
            xs = [Tensor._make(d._data + sign * eps * t._data) for d, t in zip(diff, tangents)]
            return [o._data.astype(np.float64) for o in _outputs(on_diff, xs)]
    numeric = [(p - m) / (2 * eps) for p, m in zip(shifted(1), shifted(-1))]
    for k, (a, n) in enumerate(zip(jv, numeric)):
        a = backend.to_device(a._data, backend.CPU)
        if not np.allclose(a, n, rtol=rtol, atol=atol):
            raise GradcheckError(f"JVP mismatch for output {k}:\nnumerical:\n{n}\n"
                                 f"forward mode:\n{a}")
    return True
