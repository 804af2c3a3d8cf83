"""Tensor dtypes with PyTorch's names, each backed by the NumPy dtype that CuPy shares."""
import numpy as np


class dtype:
    """A tensor element type: `dt.float32`, `dt.int64`, ... (compare with `==`)."""

    __slots__ = ("name", "np", "is_floating_point", "is_signed", "itemsize")

    def __init__(self, name, np_dtype, itemsize=None):
        self.name = name
        self.np = None if np_dtype is None else np.dtype(np_dtype)
        kind = "f" if np_dtype is None else self.np.kind  # None: bfloat16 (see below)
        self.is_floating_point = kind == "f"
        self.is_signed = kind in "fi"
        self.itemsize = self.np.itemsize if itemsize is None else itemsize

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
# NOTE: NumPy and CuPy have no bfloat16 and dtrain computes in their types; the `ml_dtypes`
# package would give a CPU-only one that CuPy cannot hold. So `dt.bfloat16` exists (scripts
# name it) and every use raises a TypeError naming it, never a silent float32.
bfloat16 = dtype("bfloat16", None, itemsize=2)

ALL = (float16, float32, float64, uint8, int8, int16, int32, int64, bool_)
_BY_NP = {d.np: d for d in ALL}
_BY_NAME = {d.name: d for d in ALL}
_BY_NAME.update(bfloat16=bfloat16, half=float16, float=float32, double=float64, short=int16,
                int=int32, long=int64)

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
    if isinstance(d, str):
        try:
            d = _BY_NAME[d.removeprefix("dtrain.").removeprefix("torch.")]
        except KeyError:
            raise TypeError(f"unknown dtype name {d!r}") from None
    if isinstance(d, dtype):
        if d.np is None:
            raise TypeError(f"dtrain.{d.name} is not supported: NumPy and CuPy have no "
                            f"{d.name} type; use dtrain.float16 or dtrain.float32")
        return d
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
    return isinstance(a, str) and a.removeprefix("dtrain.").removeprefix("torch.") in _BY_NAME


CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}  # bool < integer < floating point


def promote_types(type1, type2):
    """The smallest dtype that holds both (as torch.promote_types): a higher category wins
    (int64 with float16 is float16), within one category NumPy's promotion."""
    a, b = from_any(type1).np, from_any(type2).np
    ca, cb = CATEGORY[a.kind], CATEGORY[b.kind]
    if ca != cb:
        return from_np(a if ca > cb else b)
    return from_np(np.promote_types(a, b))


def can_cast(from_, to):
    """Whether a cast keeps the category or raises it (torch.can_cast: float to int, or int
    to bool, is not allowed)."""
    return CATEGORY[from_any(from_).np.kind] <= CATEGORY[from_any(to).np.kind]


def result_type(tensor1, tensor2):
    """The dtype of an arithmetic op on two operands (tensors or Python numbers), as
    torch.result_type: dimensioned tensors decide, then 0-d tensors and then Python numbers
    only where they are of a higher category (a Python float gives the default dtype)."""
    groups = ([], [], [])  # dimensioned tensors, 0-d tensors, Python numbers
    for v in (tensor1, tensor2):
        if isinstance(v, (bool, int, float, np.number, np.bool_)):
            groups[2].append(bool_ if isinstance(v, (bool, np.bool_)) else
                             int64 if isinstance(v, (int, np.integer)) else _default)
        elif hasattr(v, "dtype") and hasattr(v, "ndim"):
            groups[0 if v.ndim else 1].append(from_any(v.dtype))
        else:
            raise TypeError(f"result_type(): expected a Tensor or a Python number, got "
                            f"{type(v).__name__}")
    out = None
    for group in groups:
        if group:
            g = promote_types(*group) if len(group) == 2 else group[0]
            if out is None or CATEGORY[g.np.kind] > CATEGORY[out.np.kind]:
                out = g
    return out


class finfo:
    """Machine limits of a floating point dtype (default: the default dtype), as
    torch.finfo: bits, eps, max, min, tiny (= smallest_normal), resolution, dtype."""

    def __init__(self, type=None):
        d = _default if type is None else from_any(type)
        if not d.is_floating_point:
            raise TypeError(f"finfo() requires a floating point input type. Use "
                            f"iinfo to handle '{d!r}'")
        info = np.finfo(d.np)
        self.bits, self.dtype = info.bits, d.name
        self.eps, self.max, self.min = float(info.eps), float(info.max), float(info.min)
        self.tiny = self.smallest_normal = float(info.smallest_normal)
        self.resolution = 10.0 ** -info.precision  # NumPy rounds it to the dtype (float16)

    def __repr__(self):
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, "
                f"eps={self.eps:g}, smallest_normal={self.smallest_normal:g}, "
                f"tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:
    """Limits of an integer dtype, as torch.iinfo: bits, max, min, dtype."""

    def __init__(self, type):
        d = from_any(type)
        if d.np.kind not in "iu":
            raise TypeError(f"{d!r} is not supported by iinfo(); use finfo() for floats")
        info = np.iinfo(d.np)
        self.bits, self.max, self.min, self.dtype = info.bits, int(info.max), int(info.min), d.name

    def __repr__(self):
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"


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
