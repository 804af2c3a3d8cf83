"""Conversions that keep the graph: dtype casts and device moves."""
from dtrain.autograd.node import Op
from dtrain.autograd.registry import Sample, SampleMaker, register
from dtrain.core import backend
from dtrain.core import dtype as dtypes


def _cast_samples():
    s = SampleMaker("cast")
    # float32 rounding makes small finite differences noisy; casts are linear, so a large
    # step is exact up to that rounding.
    coarse = {"eps": 1e-2, "atol": 1e-4}
    return [Sample(lambda x: x.to(dtypes.float32).to(dtypes.float64), (s(3, 4),), tol=coarse),
            Sample(lambda x: x.float().double() * 2, (s(5),), tol=coarse)]


@register("cast", _cast_samples)
class Cast(Op):
    def forward(self, x, np_dtype, out=None):
        self.in_dtype = x.dtype
        if out is None:
            return x.astype(np_dtype)
        backend.array_module(x).copyto(out, x, casting="unsafe")
        return out

    def backward(self, g):
        return (g.to(dtypes.from_np(self.in_dtype)) if self.in_dtype.kind == "f" else None, None)


def _to_device_samples():
    s = SampleMaker("to_device")
    return [Sample(lambda x: x.to("cpu", copy=True) * 2, (s(3),))]


@register("to_device", _to_device_samples)
class ToDevice(Op):
    def forward(self, x, dev):
        self.src = backend.device_of(x)
        with backend.device_context(dev):
            out = backend.to_device(x, dev)
        return out.copy() if out is x else out

    def backward(self, g):
        return (g.to(self.src), None)
