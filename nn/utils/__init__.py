"""Gradient clipping and flat parameter vectors (`dt.nn.utils`); `rnn` holds sequence
packing."""
from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.ops.linalg import vector_norm
from dtrain.autograd.ops.pointwise import check_all
from dtrain.autograd.ops.shape import cat, stack
from dtrain.core.creation import full, zeros
from dtrain.core.tensor import Tensor


def _tensors(parameters):
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def _grads(parameters):
    return [p.grad for p in _tensors(parameters) if p.grad is not None]


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The `norm_type` norm of all `tensors` together, as if concatenated (a 0-d tensor):
    the norm of their norms, in tensor ops (graph mode records it; nothing is read back)."""
    tensors = _tensors(tensors)
    if not tensors:
        return zeros(())
    norm_type = float(norm_type)
    with no_grad():
        total = vector_norm(stack([vector_norm(t, norm_type) for t in tensors]), norm_type)
    if error_if_nonfinite:
        check_all(total.isfinite(), f"The total norm of order {norm_type} for gradients from "
                  "`parameters` is non-finite, so it cannot be clipped. To disable this error "
                  "and scale the gradients by the non-finite norm anyway, set "
                  "`error_if_nonfinite=False`", error="RuntimeError")
    return total


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scale all gradients in place so that their joint `norm_type` norm is at most
    max_norm; returns the norm before clipping (a 0-d tensor)."""
    parameters = _tensors(parameters)
    total = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale gradients in place by min(max_norm / (total_norm + 1e-6), 1), a 0-d tensor
    (`total_norm` a tensor or a number)."""
    grads = _grads(parameters)
    if not grads:
        return
    with no_grad():
        if not isinstance(total_norm, Tensor):
            total_norm = full((), float(total_norm), dtype=grads[0].dtype,
                              device=grads[0].device)
        coef = (float(max_norm) / (total_norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient in place to [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters):
    """All parameters flattened and concatenated into one 1-D tensor (differentiable)."""
    return cat([p.reshape(-1) for p in _tensors(parameters)])


def vector_to_parameters(vec, parameters):
    """Point each parameter's data at its slice of the 1-D `vec` (as torch: they share
    memory with vec afterwards)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    params = _tensors(parameters)
    total = sum(p.numel() for p in params)
    if total != vec.numel():
        raise ValueError(f"vector_to_parameters: vec has {vec.numel()} elements but the "
                         f"parameters hold {total}")
    offset = 0
    for p in params:
        n = p.numel()
        p._data = vec._data[offset:offset + n].reshape(p._data.shape)
        offset += n


from dtrain.nn.utils import rnn  # noqa: E402,F401  (dt.nn.utils.rnn, as torch)
from dtrain.nn.utils import parametrizations, parametrize  # noqa: E402,F401
from dtrain.nn.utils.weight_norm import remove_weight_norm, weight_norm  # noqa: E402,F401
