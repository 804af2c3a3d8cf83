"""`dt.save` / `dt.load`: checkpoints that loading cannot turn into code execution.

File layout (all integers little-endian)::

    b"DTRNCKP1" | header length (u64) | payload length (u64) | header | payload | sha256

The header is JSON describing the saved object: plain values as themselves, containers
tagged ({"t": "dict", "items": [[key, value], ...]}, "odict", "list", "tuple"), tensors and
NumPy arrays as {"t": "tensor" | "ndarray", "i": n} pointing at an entry of the header's
"arrays" table (dtype name, shape, byte offset into the payload). The payload holds the raw
little-endian array bytes, each at a 64-byte-aligned offset. The sha256 covers everything
before it, so a truncated or corrupted file is rejected before anything is parsed; loading
only ever runs `json.loads` and copies bytes into arrays of whitelisted dtypes — no pickle.

Files are written atomically: to a temporary file in the same directory, flushed and
fsync'ed, renamed over the target with `os.replace`, then the directory is fsync'ed, so a
crash mid-write leaves the previous checkpoint intact.
"""
import hashlib
import json
import os
import secrets
import struct
from collections import OrderedDict

import numpy as np

from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.device import device as Device
from dtrain.core.tensor import Tensor

MAGIC = b"DTRNCKP1"
_PREFIX = struct.Struct("<8sQQ")  # magic, header length, payload length
_DIGEST = 32  # sha256 bytes at the end of the file
_ALIGN = 64
_DTYPES = {d.name: d.np.newbyteorder("<") for d in dtypes.ALL}
_SAVABLE = {d.np for d in dtypes.ALL}


# -- saving ----------------------------------------------------------------------------------
def save(obj, f):
    """Save `obj` to the path (or binary file object) `f`.

    `obj` may nest dicts (OrderedDicts stay ordered dicts), lists and tuples of Tensors,
    NumPy arrays, dtypes, devices, and int/float/str/bool/None — e.g. a model's or
    optimizer's `state_dict()`. A Tensor that appears several times is saved once and
    loads as one shared Tensor. Anything else raises TypeError naming where it is.
    """
    arrays, tensors = [], {}
    tree = _encode(obj, arrays, tensors, "obj")
    table, offset = [], 0
    for arr, meta in arrays:
        offset += -offset % _ALIGN
        table.append({**meta, "dtype": dtypes.from_np(arr.dtype).name,
                      "shape": list(arr.shape), "offset": offset})
        offset += arr.nbytes
    header = json.dumps({"format": "dtrain", "version": 1, "arrays": table, "tree": tree},
                        separators=(",", ":")).encode()
    header += b" " * (-(_PREFIX.size + len(header)) % _ALIGN)  # payload starts aligned
    if isinstance(f, (str, os.PathLike)):
        _atomic_write(os.fspath(f), lambda out: _write(out, header, offset, arrays, table))
    else:
        _write(f, header, offset, arrays, table)


def _encode(obj, arrays, tensors, where):
    """The JSON form of `obj`; arrays found are appended to `arrays` as (array, meta)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Tensor):
        if id(obj) not in tensors:
            tensors[id(obj)] = len(arrays)
            arrays.append((obj._data, {"device": str(obj.device),
                                      "requires_grad": bool(obj.requires_grad)}))
        return {"t": "tensor", "i": tensors[id(obj)]}
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype not in _SAVABLE:
            raise TypeError(f"dt.save cannot store a NumPy array of dtype {obj.dtype} at "
                            f"{where}; supported: {', '.join(_DTYPES)}")
        arrays.append((np.asarray(obj), {"scalar": isinstance(obj, np.generic)}))
        return {"t": "ndarray", "i": len(arrays) - 1}
    if isinstance(obj, dict):
        items = [[_encode(k, arrays, tensors, f"{where} key {k!r}"),
                  _encode(v, arrays, tensors, f"{where}[{k!r}]")] for k, v in obj.items()]
        return {"t": "odict" if isinstance(obj, OrderedDict) else "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        return {"t": "list" if isinstance(obj, list) else "tuple",
                "v": [_encode(v, arrays, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, dtypes.dtype):
        return {"t": "dtype", "v": obj.name}
    if isinstance(obj, Device):
        return {"t": "device", "v": str(obj)}
    raise TypeError(f"dt.save cannot store {type(obj).__name__} at {where}: only Tensors, "
                    "NumPy arrays, dtypes, devices, dicts, lists, tuples and int/float/str/"
                    "bool/None are supported (no pickle)")


def _write(out, header, payload_len, arrays, table):
    digest = hashlib.sha256()

    def put(chunk):
        digest.update(chunk)
        out.write(chunk)

    put(_PREFIX.pack(MAGIC, len(header), payload_len))
    put(header)
    pos = 0
    for (arr, _), meta in zip(arrays, table):
        put(b"\0" * (meta["offset"] - pos))
        _write_array(put, arr)
        pos = meta["offset"] + arr.nbytes
    out.write(digest.digest())


def _write_array(put, arr):
    host = np.ascontiguousarray(backend.to_device(arr, backend.CPU))
    put(memoryview(host.astype(host.dtype.newbyteorder("<"), copy=False).reshape(-1)
                   .view(np.uint8)))


def _atomic_write(path, write):
    """Run `write(file)` on a temporary file beside `path`, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _create_temp(directory, base):
    """A new, exclusively created file; mode 0o666 less the umask, like a plain open()."""
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


# -- loading ---------------------------------------------------------------------------------
def load(f, map_location=None, *, weights_only=None):
    """Load an object saved by `dt.save` from a path or binary file object.

    `map_location` places tensors: None (where they were saved), a device or "cpu"/"cuda:N",
    a dict {saved location: new location} such as {"cuda:1": "cuda:0"}, or a callable
    `fn(tensor_on_cpu, saved_location)` returning a Tensor or None (None: default placement).
    Loading never executes code from the file, so `weights_only` may only be None or True.
    """
    if weights_only is False:
        raise ValueError("dt.load never unpickles; weights_only=False is not supported")
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", repr(f))
    buf = _read(f)
    header, payload = _verify(buf, name)
    try:
        metas = header["arrays"]
        arrays = [_array(meta, payload) for meta in metas]
        tensors = {}

        def leaf(tag, i):
            meta, arr = metas[i], arrays[i]
            if tag == "ndarray":
                return arr[()] if meta.get("scalar") else arr
            if i not in tensors:  # one Tensor per saved Tensor, shared where it was
                tensors[i] = _place(arr, meta["device"], meta["requires_grad"], map_location)
            return tensors[i]

        return _decode(header["tree"], leaf)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise RuntimeError(f"dt.load: {name} is malformed ({type(err).__name__}: {err})") from None


def verify(f):
    """Check that `f` (a path or binary file) is a complete dtrain file whose checksum
    matches, without decoding it; raises RuntimeError naming the problem."""
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", repr(f))
    _verify(_read(f), name)


def _read(f):
    if isinstance(f, (str, os.PathLike)):
        with open(f, "rb") as src:
            buf = bytearray(os.fstat(src.fileno()).st_size)
            n = src.readinto(buf)
        return buf[:n] if n < len(buf) else buf
    return bytearray(f.read())


def _verify(buf, name):
    """Check magic, lengths and checksum; return (header dict, payload memoryview)."""
    if len(buf) < _PREFIX.size:
        if not MAGIC.startswith(bytes(buf[:len(MAGIC)])):
            _not_ours(name)
        raise RuntimeError(f"dt.load: {name} is truncated ({len(buf)} bytes, shorter than "
                           "the file prefix)")
    magic, header_len, payload_len = _PREFIX.unpack_from(buf)
    if magic != MAGIC:
        _not_ours(name)
    expected = _PREFIX.size + header_len + payload_len + _DIGEST
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "longer than recorded (corrupted)"
        raise RuntimeError(f"dt.load: {name} is {what}: {len(buf)} bytes, expected {expected}")
    view = memoryview(buf)
    if hashlib.sha256(view[:-_DIGEST]).digest() != bytes(view[-_DIGEST:]):
        raise RuntimeError(f"dt.load: {name} is corrupted: its sha256 checksum does not match "
                           "its contents")
    start = _PREFIX.size + header_len
    try:
        header = json.loads(bytes(view[_PREFIX.size:start]))
    except ValueError as err:
        raise RuntimeError(f"dt.load: {name} has an unreadable header ({err})") from None
    if not isinstance(header, dict) or header.get("format") != "dtrain":
        raise RuntimeError(f"dt.load: {name} has no dtrain header")
    if header.get("version") != 1:
        raise RuntimeError(f"dt.load: {name} has format version {header.get('version')!r}; "
                           "this dtrain reads version 1")
    return header, view[start:start + payload_len]


def _not_ours(name):
    raise RuntimeError(f"dt.load: {name} is not a dtrain checkpoint (bad magic bytes). "
                       "dt.load reads only files written by dt.save and never unpickles "
                       "(torch.save/.pt files are pickles and are refused).")


def _array(meta, payload):
    """The NumPy array that `meta` describes, a writable view into the payload buffer."""
    dt = _DTYPES.get(meta["dtype"])
    if dt is None:
        raise ValueError(f"dtype {meta['dtype']!r} is not one dtrain saves")
    shape = tuple(meta["shape"])
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"bad shape {meta['shape']!r}")
    count = int(np.prod(shape, dtype=np.int64))
    offset = meta["offset"]
    if not isinstance(offset, int) or offset < 0 or offset + count * dt.itemsize > len(payload):
        raise ValueError(f"array bytes at offset {offset!r} lie outside the payload")
    if count == 0:
        return np.empty(shape, dt.newbyteorder("="))
    arr = np.frombuffer(payload, dtype=dt, count=count, offset=offset).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=False)


def _place(arr, saved, requires_grad, map_location):
    """A Tensor holding `arr`, on the device `map_location` chooses for location `saved`."""
    target = saved
    if callable(map_location):
        out = map_location(Tensor._make(arr), saved)
        if out is not None:
            return out.requires_grad_(bool(requires_grad))
    elif isinstance(map_location, dict):
        target = map_location.get(saved, saved)
    elif map_location is not None:
        target = map_location
    dev = Device(target)
    if dev.type == "cuda" and not backend.cuda_is_available():
        raise RuntimeError(f"Attempting to deserialize object on a CUDA device ({target}) but "
                           "dt.cuda.is_available() is False. If you are running on a CPU-only "
                           "machine, please use dt.load with map_location='cpu' to map your "
                           "tensors to the CPU.")
    data = backend.to_device(arr, backend.normalize_device(dev))
    return Tensor._make(data).requires_grad_(bool(requires_grad))


def _decode(node, leaf):
    """The object that JSON `node` describes; `leaf(tag, i)` makes tensors and arrays."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    tag = node["t"]
    if tag in ("tensor", "ndarray"):
        return leaf(tag, node["i"])
    if tag in ("dict", "odict"):
        out = OrderedDict() if tag == "odict" else {}
        for key, value in node["items"]:
            out[_decode(key, leaf)] = _decode(value, leaf)
        return out
    if tag == "list":
        return [_decode(v, leaf) for v in node["v"]]
    if tag == "tuple":
        return tuple(_decode(v, leaf) for v in node["v"])
    if tag == "dtype":
        return dtypes.from_any(node["v"])
    if tag == "device":
        return Device(node["v"])
    raise ValueError(f"unknown node tag {tag!r}")
