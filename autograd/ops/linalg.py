"""Matrix products with NumPy/PyTorch semantics: 1-D operands, batch broadcasting."""
from dtrain.autograd.autocast import autocast_args
from dtrain.autograd.node import Op
from dtrain.autograd.registry import Sample, SampleMaker, register
from dtrain.core.backend import array_module


def _matmul_samples():
    s = SampleMaker("matmul")
    mm = lambda a, b: a @ b  # noqa: E731
    return [Sample(mm, (s(3, 4), s(4, 2))),
            Sample(mm, (s(2, 3, 4), s(4, 5))),          # batched @ matrix
            Sample(mm, (s(2, 1, 3, 4), s(3, 4, 2))),    # batch broadcasting
            Sample(mm, (s(4), s(4, 3))),                # vector @ matrix
            Sample(mm, (s(2, 3, 4), s(4))),             # batched matrix @ vector
            Sample(mm, (s(4), s(4)))]                   # dot


@register("matmul", _matmul_samples)
class Matmul(Op):
    saves_inputs = True
    writes_out = True

    def forward(self, a, b, out=None):
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                               f"{a.ndim}D and {b.ndim}D")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise RuntimeError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be "
                               f"multiplied ({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        return array_module(a).matmul(a, b, out=out)

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        # Treat 1-D operands as matrices (a row, b a column) and g accordingly.
        a2 = a.unsqueeze(0) if a._data.ndim == 1 else a
        b2 = b.unsqueeze(-1) if b._data.ndim == 1 else b
        if b._data.ndim == 1:
            g = g.unsqueeze(-1)
        if a._data.ndim == 1:
            g = g.unsqueeze(-2)
        ga = (g @ b2.mT).sum_to_size(a2._data.shape).reshape(a._data.shape) if na else None
        gb = (a2.mT @ g).sum_to_size(b2._data.shape).reshape(b._data.shape) if nb else None
        return ga, gb


def matmul(input, other):
    return Matmul.apply(*autocast_args(input, other))


def mm(input, mat2):
    if input._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(f"mm: expected 2-D tensors, got {input._data.ndim}-D and "
                           f"{mat2._data.ndim}-D")
    return Matmul.apply(*autocast_args(input, mat2))


def bmm(input, mat2):
    if input._data.ndim != 3 or mat2._data.ndim != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got {input._data.ndim}-D and "
                           f"{mat2._data.ndim}-D")
    if input._data.shape[0] != mat2._data.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input._data.shape[0]} and "
                           f"{mat2._data.shape[0]}")
    return Matmul.apply(*autocast_args(input, mat2))


def dot(input, other):
    if input._data.ndim != 1 or other._data.ndim != 1:
        raise RuntimeError("1D tensors expected, but got "
                           f"{input._data.ndim}D and {other._data.ndim}D tensors")
    return Matmul.apply(input, other)


def outer(input, vec2):
    return input.unsqueeze(1) * vec2
