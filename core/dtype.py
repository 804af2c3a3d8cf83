"""Tensor dtypes with PyTorch's names, each backed by the NumPy dtype that CuPy shares."""
import numpy as np


class dtype:
    """A tensor element type: `dt.float32`, `dt.int64`, ... (compare with `==`)."""

    __slots__ = ("name", "np", "is_floating_point", "is_signed", "itemsize")

    def __init__(self, name, np_dtype):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.is_floating_point = self.np.kind == "f"
        self.is_signed = self.np.kind in "fi"
        self.itemsize = self.np.itemsize

    def __repr__(self):
        return f"dtrain.{self.name}"

    def __reduce__(self):
        return (from_any, (self.name,))


float16 = dtype("float16", np.float16)
float32 = dtype("float32", np.float32)
float64 = dtype("float64", np.float64)
uint8 = dtype("uint8", np.uint8)
int8 = dtype("int8", np.int8)
int16 = dtype("int16", np.int16)
int32 = dtype("int32", np.int32)
int64 = dtype("int64", np.int64)
bool_ = dtype("bool", np.bool_)

ALL = (float16, float32, float64, uint8, int8, int16, int32, int64, bool_)
_BY_NP = {d.np: d for d in ALL}
_BY_NAME = {d.name: d for d in ALL}
_BY_NAME.update(half=float16, float=float32, double=float64, short=int16, int=int32, long=int64)

_default = float32


def get_default_dtype():
    """The dtype of float tensors made from Python floats (float32 unless changed)."""
    return _default


def set_default_dtype(d):
    """Set the default float dtype (float32 or float64), as `torch.set_default_dtype`."""
    global _default
    d = from_any(d)
    if not d.is_floating_point:
        raise TypeError(f"set_default_dtype: only floating point dtypes are supported, got {d}")
    _default = d


def from_np(np_dtype):
    """The dtrain dtype for a NumPy dtype; TypeError for types dtrain does not support."""
    try:
        return _BY_NP[np_dtype]
    except KeyError:
        raise TypeError(f"unsupported array dtype {np.dtype(np_dtype)}; dtrain supports "
                        f"{', '.join(d.name for d in ALL)}") from None


def from_any(d):
    """Accept a dtrain dtype, a NumPy dtype or type, or a name such as "float32"."""
    if isinstance(d, dtype):
        return d
    if isinstance(d, str):
        try:
            return _BY_NAME[d.removeprefix("dtrain.").removeprefix("torch.")]
        except KeyError:
            raise TypeError(f"unknown dtype name {d!r}") from None
    if d is float:
        return _default
    if d is int:
        return int64
    if d is bool:
        return bool_
    try:
        return from_np(np.dtype(d))
    except TypeError as err:
        raise TypeError(f"cannot interpret {d!r} as a dtrain dtype") from err


def is_dtype_spec(a):
    """Whether `a` names a dtype (a dtrain dtype or a name such as "float32"), as opposed to
    a device string: how `.to(...)` arguments are told apart."""
    if isinstance(a, dtype):
        return True
    if not isinstance(a, str):
        return False
    try:
        from_any(a)
        return True
    except TypeError:
        return False


def to_np(d):
    """The NumPy dtype behind `d` (any form `from_any` accepts)."""
    return from_any(d).np


# torch's legacy type names ("torch.FloatTensor"): `Tensor.type()` and `dt.FloatTensor`...
LEGACY_NAMES = {float32: "FloatTensor", float64: "DoubleTensor", float16: "HalfTensor",
                int64: "LongTensor", int32: "IntTensor", int16: "ShortTensor",
                int8: "CharTensor", uint8: "ByteTensor", bool_: "BoolTensor"}
_BY_LEGACY = {n: d for d, n in LEGACY_NAMES.items()}


def legacy_type_name(d, cuda):
    """torch's type string for dtype `d`: "torch.FloatTensor", "torch.cuda.LongTensor"."""
    return f"torch.{'cuda.' if cuda else ''}{LEGACY_NAMES[d]}"


def parse_legacy_type(name):
    """(dtype, is_cuda) for a type string: "torch.FloatTensor", "dtrain.cuda.LongTensor"."""
    rest = name.removeprefix("torch.").removeprefix("dtrain.")
    cuda = rest.startswith("cuda.")
    try:
        return _BY_LEGACY[rest.removeprefix("cuda.")], cuda
    except KeyError:
        raise ValueError(f"invalid type: {name!r}; expected a name such as 'torch.FloatTensor',"
                         f" 'dtrain.LongTensor' or 'torch.cuda.FloatTensor'") from None
