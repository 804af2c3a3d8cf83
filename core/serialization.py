"""`dt.save` / `dt.load`: checkpoints that loading turns into code execution only when asked.

File layout (all integers little-endian)::

    b"DTRNCKP1" | header length (u64) | payload length (u64) | header | payload | sha256

The header is JSON describing the saved object: plain values as themselves, containers
tagged ({"t": "dict", "items": [[key, value], ...]}, "odict", "list", "tuple"), tensors and
NumPy arrays as {"t": "tensor" | "ndarray", "i": n} pointing at an entry of the header's
"arrays" table (dtype name, shape, byte offset into the payload). The payload holds the raw
little-endian array bytes, each at a 64-byte-aligned offset. The sha256 covers everything
before it, so a truncated or corrupted file is rejected before anything is parsed. A file of
such values (state dicts) is read with `json.loads` and byte copies only — no pickle.

Anything else (a whole Module, an optimizer, user objects) is a {"t": "pickle", "i": n} node:
the n-th object pickled into the pickle section, a uint8 entry of the arrays table named by
the header's "pickle" key. Tensors and arrays inside those objects are not pickled but stored
in the payload like all others (persistent ids), so they stay raw, checksummed bytes and are
shared with the rest of the file. Loading it unpickles, so by default (`weights_only=True`,
as PyTorch 2.6) only allowlisted globals may be named by the pickle: see `add_safe_globals`.

Files are written atomically: to a temporary file in the same directory, flushed and
fsync'ed, renamed over the target with `os.replace`, then the directory is fsync'ed, so a
crash mid-write leaves the previous checkpoint intact.
"""
import contextlib
import hashlib
import io
import json
import os
import pickle
import secrets
import struct
from collections import Counter, OrderedDict

import numpy as np

from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.device import device as Device
from dtrain.core.tensor import Size, Tensor

MAGIC = b"DTRNCKP1"
_PREFIX = struct.Struct("<8sQQ")  # magic, header length, payload length
_DIGEST = 32  # sha256 bytes at the end of the file
_ALIGN = 64
_DTYPES = {d.name: d.np.newbyteorder("<") for d in dtypes.ALL}
_SAVABLE = {d.np for d in dtypes.ALL}


# -- saving ----------------------------------------------------------------------------------
def save(obj, f, *, format=None, metadata=None):
    """Save `obj` to the path (or binary file object) `f`.

    Dicts (OrderedDicts stay ordered dicts), lists and tuples of Tensors, NumPy arrays,
    dtypes, devices and int/float/str/bool/None — e.g. a `state_dict()` — are stored without
    pickle. Any other picklable object (a whole Module, an optimizer) is pickled with its
    tensors stored beside it; `dt.load` then needs `weights_only=False` or an allowlist. A
    Tensor that appears several times is saved once and loads as one shared Tensor.
    A path ending in `.safetensors` or `format="safetensors"` writes a safetensors file of a
    flat state dict instead, with optional str -> str `metadata` (core/safetensors_io.py).
    """
    if _safetensors(f, format):
        from dtrain.core import safetensors_io
        return safetensors_io.save(obj, f, metadata)
    if metadata is not None:
        raise ValueError("dt.save: metadata= is for safetensors files (format='safetensors')")
    arrays, tensors, opaque = [], {}, {}
    tree = _encode(obj, arrays, tensors, opaque, "obj")
    extra = {"pickle": _pickle(opaque, arrays, tensors)} if opaque else {}
    table, offset = [], 0
    for arr, meta in arrays:
        offset += -offset % _ALIGN
        table.append({**meta, "dtype": dtypes.from_np(arr.dtype).name,
                      "shape": list(arr.shape), "offset": offset})
        offset += arr.nbytes
    header = json.dumps({"format": "dtrain", "version": 1, "arrays": table, "tree": tree,
                         **extra}, separators=(",", ":")).encode()
    header += b" " * (-(_PREFIX.size + len(header)) % _ALIGN)  # payload starts aligned
    if isinstance(f, (str, os.PathLike)):
        _atomic_write(os.fspath(f), lambda out: _write(out, header, offset, arrays, table))
    else:
        _write(f, header, offset, arrays, table)


def _encode(obj, arrays, tensors, opaque, where):
    """The JSON form of `obj`; arrays found are appended to `arrays` as (array, meta), objects
    that need pickle are put in `opaque` ({id: (index, object, where)})."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Tensor):
        return {"t": "tensor", "i": _add_tensor(obj, arrays, tensors)}
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype in _SAVABLE:
        return {"t": "ndarray", "i": _add_array(obj, arrays)}
    if isinstance(obj, dict):
        items = [[_encode(k, arrays, tensors, opaque, f"{where} key {k!r}"),
                  _encode(v, arrays, tensors, opaque, f"{where}[{k!r}]")]
                 for k, v in obj.items()]
        return {"t": "odict" if isinstance(obj, OrderedDict) else "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        return {"t": "list" if isinstance(obj, list) else "tuple",
                "v": [_encode(v, arrays, tensors, opaque, f"{where}[{i}]")
                      for i, v in enumerate(obj)]}
    if isinstance(obj, dtypes.dtype):
        return {"t": "dtype", "v": obj.name}
    if isinstance(obj, Device):
        return {"t": "device", "v": str(obj)}
    if id(obj) not in opaque:
        opaque[id(obj)] = (len(opaque), obj, where)
    return {"t": "pickle", "i": opaque[id(obj)][0]}


def _add_tensor(t, arrays, tensors):
    """The index of Tensor `t` in `arrays`, added on first sight (`tensors`: id -> index)."""
    if id(t) not in tensors:
        tensors[id(t)] = len(arrays)
        arrays.append((t._data, {"device": str(t.device), "requires_grad": bool(t.requires_grad)}))
    return tensors[id(t)]


def _add_array(arr, arrays):
    arrays.append((np.asarray(arr), {"scalar": isinstance(arr, np.generic)}))
    return len(arrays) - 1


class _Pickler(pickle.Pickler):
    """Pickles with Tensors and NumPy arrays of saved dtypes taken out of band into `arrays`:
    the pickle holds ("tensor", i[, Tensor subclass]) or ("ndarray", i) in their place."""

    def __init__(self, out, arrays, tensors):
        super().__init__(out, pickle.HIGHEST_PROTOCOL)
        self._arrays, self._tensors, self._seen = arrays, tensors, {}
        self._keep = []  # ids index `tensors` and `_seen`: their objects must outlive the dump

    def persistent_id(self, obj):
        if isinstance(obj, Tensor):
            self._keep.append(obj)
            i = _add_tensor(obj, self._arrays, self._tensors)
            return ("tensor", i) if type(obj) is Tensor else ("tensor", i, type(obj))
        if (type(obj) is np.ndarray or isinstance(obj, np.generic)) and obj.dtype in _SAVABLE:
            if id(obj) not in self._seen:
                self._keep.append(obj)
                self._seen[id(obj)] = _add_array(obj, self._arrays)
            return ("ndarray", self._seen[id(obj)])
        return None


def _pickle(opaque, arrays, tensors):
    """Pickle the objects of `opaque`, in order and sharing one memo, into a uint8 entry of
    `arrays`; return its index."""
    out = io.BytesIO()
    pickler = _Pickler(out, arrays, tensors)
    for _, obj, where in opaque.values():
        try:
            pickler.dump(obj)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise TypeError(f"dt.save cannot store {type(obj).__name__} at {where}: it is "
                            f"not picklable ({err})") from err
    return _add_array(np.frombuffer(out.getbuffer(), np.uint8), arrays)


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
    put(array_bytes(arr))


def array_bytes(arr):
    """The bytes `save` writes for array `arr`: its elements in C order, little-endian, on
    the host (a view when `arr` already is that)."""
    host = np.ascontiguousarray(backend.to_device(arr, backend.CPU))
    return memoryview(host.astype(host.dtype.newbyteorder("<"), copy=False).reshape(-1)
                      .view(np.uint8))


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
def _safetensors(f, format):
    """Whether `format` (None: by `f`'s suffix) is safetensors rather than dtrain's."""
    if format not in (None, "dtrain", "safetensors"):
        raise ValueError(f"format must be 'dtrain' or 'safetensors', got {format!r}")
    return format == "safetensors" or format is None and isinstance(f, (str, os.PathLike)) \
        and os.fspath(f).endswith(".safetensors")


def load(f, map_location=None, *, weights_only=None, format=None):
    """Load an object saved by `dt.save` from a path or binary file object.

    `map_location` places tensors: None (where they were saved), a device or "cpu"/"cuda:N",
    a dict {saved location: new location} such as {"cuda:1": "cuda:0"}, or a callable
    `fn(tensor_on_cpu, saved_location)` returning a Tensor or None (None: default placement).
    `weights_only` (None means True, as PyTorch 2.6): a file holding pickled objects (see
    `dt.save`) is unpickled allowing only dtrain's own globals and those of
    `add_safe_globals`; False unpickles anything — only for files from a trusted source.
    A path ending in `.safetensors` or `format="safetensors"` reads a safetensors file.
    """
    if weights_only not in (None, True, False):
        raise TypeError(f"dt.load: weights_only must be None, True or False, got "
                        f"{weights_only!r}")
    if _safetensors(f, format):
        from dtrain.core import safetensors_io
        return safetensors_io.load(f, map_location)
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", repr(f))
    buf = _read(f)
    header, payload = _verify(buf, name)
    try:
        metas = header["arrays"]
        arrays = [_array(meta, payload) for meta in metas]
        pickled = header.get("pickle")
        if pickled is not None and metas[pickled]["dtype"] != "uint8":
            raise ValueError(f"pickle section {pickled!r} is not a uint8 array")
    except (KeyError, IndexError, TypeError, ValueError) as err:
        _malformed(name, err)
    tensors, objects = {}, []

    def leaf(tag, i, cls=Tensor):
        if tag == "pickle":
            return objects[i]
        meta, arr = metas[i], arrays[i]
        if tag == "ndarray":
            return arr[()] if meta.get("scalar") else arr
        if i not in tensors:  # one Tensor per saved Tensor, shared where it was
            t = _place(arr, meta["device"], meta["requires_grad"], map_location)
            tensors[i] = t if cls is Tensor else cls._make(t._data, t.requires_grad)
        return tensors[i]

    if pickled is not None:  # outside the try below: errors of user classes stay theirs
        objects += _unpickle(arrays[pickled], leaf, weights_only is not False, name)
    try:
        return _decode(header["tree"], leaf)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        _malformed(name, err)


def _malformed(name, err):
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


def payload_offsets(path):
    """{key: byte offset in the file} of the arrays of a flat dict of arrays saved at `path`
    (read from the header only: for readers that seek to one array and check it
    themselves, as distributed checkpoints do)."""
    with open(path, "rb") as src:
        prefix = src.read(_PREFIX.size)
        magic, header_len, _ = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            _not_ours(path)
        header = json.loads(src.read(header_len))
    start = _PREFIX.size + header_len
    return {key: start + header["arrays"][node["i"]]["offset"]
            for key, node in header["tree"]["items"]}


def _not_ours(name):
    raise RuntimeError(f"dt.load: {name} is not a dtrain checkpoint (bad magic bytes). "
                       "dt.load reads only files written by dt.save (torch.save/.pt files, "
                       "zip archives of pickles of torch's own classes, are refused unread).")


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
    if tag in ("tensor", "ndarray", "pickle"):
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


# -- the pickle section and its allowlist ----------------------------------------------------
_BLOCKED_MODULES = {"sys", "os", "posix", "nt", "subprocess"}  # never allowed, as PyTorch
_safe_globals = set()  # what add_safe_globals allowed: objects or (object, "module.name")
_DTRAIN_GLOBALS = {}  # full name -> object that dtrain's own pickles name; always allowed


def _full_name(entry):
    """The "module.qualname" under which a pickle names `entry` (an object or a pair)."""
    if isinstance(entry, tuple):
        if len(entry) != 2 or not isinstance(entry[1], str):
            raise TypeError(f"a safe global given as a tuple must be (object, \"module.name\"), "
                            f"got {entry!r}")
        return entry[1]
    module, qualname = getattr(entry, "__module__", None), getattr(entry, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)):
        raise TypeError(f"{entry!r} has no __module__/__qualname__: pass it as (object, "
                        f"\"module.name\")")
    return f"{module}.{qualname}"


def allow_dtrain_global(obj):
    """Allow `obj` (a class or function of dtrain that its pickles name, e.g.
    `nn.Parameter`) in every `weights_only` load; it is not listed by `get_safe_globals`."""
    _DTRAIN_GLOBALS[_full_name(obj)] = obj
    return obj


for _obj in (OrderedDict, Counter, set, frozenset, bytearray, complex, Size, Device,
             dtypes.from_any):
    allow_dtrain_global(_obj)


def add_safe_globals(safe_globals):
    """Allow these classes and functions in `dt.load(..., weights_only=True)`; an entry may
    be `(object, "module.name")` to give the name the pickle uses. Globals of the modules
    sys, os, posix, nt and subprocess are never allowed."""
    for entry in safe_globals:  # check them all before allowing any
        _full_name(entry)
    _safe_globals.update(safe_globals)


def get_safe_globals():
    """The list of what `add_safe_globals` allowed."""
    return list(_safe_globals)


def clear_safe_globals():
    """Forget everything `add_safe_globals` allowed."""
    _safe_globals.clear()


@contextlib.contextmanager
def safe_globals(safe_globals):
    """`with safe_globals([...]):` — `add_safe_globals` for the block; on exit those entries
    are removed again (as PyTorch, even if they were allowed before it)."""
    add_safe_globals(safe_globals)
    try:
        yield
    finally:
        _safe_globals.difference_update(safe_globals)


class _Unpickler(pickle.Unpickler):
    """Unpickles the pickle section: persistent ids come from `leaf`; when `restricted`,
    globals come only from dtrain's and the user's allowlists.

    NOTE: every callable or class a pickle can use comes through `find_class` (GLOBAL,
    STACK_GLOBAL, INST, extension codes), so restricting it is Python's documented way to
    restrict unpickling; PyTorch's weights-only unpickler also re-implements the opcodes."""

    def __init__(self, file, leaf, restricted, name):
        super().__init__(file)
        self._leaf, self._name = leaf, name
        self._allowed = None
        if restricted:
            self._allowed = {**{_full_name(e): (e[0] if isinstance(e, tuple) else e)
                                for e in _safe_globals}, **_DTRAIN_GLOBALS}

    def find_class(self, module, name):
        if self._allowed is None:
            return super().find_class(module, name)
        full = f"{module}.{name}"
        if full in self._allowed and module.partition(".")[0] not in _BLOCKED_MODULES:
            return self._allowed[full]
        raise pickle.UnpicklingError(
            f"dt.load: {self._name} holds pickled objects, and with weights_only=True (the "
            f"default) the pickle may name only allowlisted globals; it needs {full}, which "
            f"is not allowed. If you trust the source of this file, load it with "
            f"dt.load(f, weights_only=False) (unpickling can run arbitrary code). Otherwise "
            f"allowlist what it needs: dt.serialization.add_safe_globals([{full}]) or "
            f"`with dt.serialization.safe_globals([{full}]): dt.load(f)`.")

    def persistent_load(self, pid):
        """("tensor", i), ("tensor", i, Tensor subclass) or ("ndarray", i): see _Pickler."""
        ok = isinstance(pid, tuple) and len(pid) in (2, 3) and pid[0] in ("tensor", "ndarray")
        cls = pid[2] if ok and len(pid) == 3 else Tensor
        if not (ok and isinstance(pid[1], int) and isinstance(cls, type)
                and issubclass(cls, Tensor)):
            raise pickle.UnpicklingError(f"dt.load: {self._name} has a bad persistent id "
                                         f"{pid!r}")
        try:
            return self._leaf(pid[0], pid[1], cls)
        except (IndexError, KeyError) as err:
            raise pickle.UnpicklingError(f"dt.load: {self._name} has a persistent id {pid!r} "
                                         f"that names no saved array ({err})") from None


def _unpickle(data, leaf, restricted, name):
    """The objects pickled one after another into `data` (the pickle section's bytes)."""
    file = io.BytesIO(data)
    unpickler = _Unpickler(file, leaf, restricted, name)
    objects = []
    while file.tell() < len(data):
        objects.append(unpickler.load())
    return objects
