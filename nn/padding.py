"""Padding layers: `torch.nn`'s ConstantPad, ZeroPad, ReflectionPad, ReplicationPad and
CircularPad in 1, 2 and 3 dims, each one call of `F.pad`."""
from dtrain.autograd.ops.shape import pad
from dtrain.nn.conv import as_tuple
from dtrain.nn.module import Module


class _PadNd(Module):
    """Pads the last `nd` dims by `padding` (an int for every side, or 2 * nd ints, last dim
    first as in `F.pad`)."""

    mode = "constant"
    nd = 1

    def __init__(self, padding):
        super().__init__()
        self.padding = as_tuple(padding, 2 * self.nd, "padding")

    def forward(self, input):
        return pad(input, self.padding, self.mode)

    def extra_repr(self):
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding)
        self.value = value

    def forward(self, input):
        return pad(input, self.padding, "constant", self.value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


def _layers(base, mode, name):
    """`{name}1d`, `{name}2d`, `{name}3d`: subclasses of `base` padding 1, 2 and 3 dims."""
    return tuple(type(f"{name}{nd}d", (base,), {"nd": nd, "mode": mode, "__module__": __name__})
                 for nd in (1, 2, 3))


def _zero(base):
    """`base` (a ConstantPad layer) filling zeros, as torch's ZeroPad layers subclass it."""
    def __init__(self, padding):
        base.__init__(self, padding, 0.0)
    return type(base.__name__.replace("Constant", "Zero"), (base,),
                {"__init__": __init__, "extra_repr": _PadNd.extra_repr, "__module__": __name__})


ConstantPad1d, ConstantPad2d, ConstantPad3d = _layers(_ConstantPadNd, "constant", "ConstantPad")
ZeroPad1d, ZeroPad2d, ZeroPad3d = map(_zero, (ConstantPad1d, ConstantPad2d, ConstantPad3d))
ReflectionPad1d, ReflectionPad2d, ReflectionPad3d = _layers(_PadNd, "reflect", "ReflectionPad")
ReplicationPad1d, ReplicationPad2d, ReplicationPad3d = _layers(_PadNd, "replicate",
                                                               "ReplicationPad")
CircularPad1d, CircularPad2d, CircularPad3d = _layers(_PadNd, "circular", "CircularPad")
