"""The files of a distributed checkpoint: one per writing rank, in dtrain's safe format
(`dt.save` of a flat dict of arrays: written atomically and fsync'ed, sha256 of the whole
file at its end), each piece also checksummed on its own so that a reader can seek to the
pieces it needs and check just those."""
import hashlib
import os

import numpy as np

from dtrain.core import serialization


def piece_name(path, offsets):
    """The key of a piece in its file: the tensor's path and the piece's offsets."""
    return f"{path}@{','.join(map(str, offsets))}"


def _bytes(arr):
    """The little-endian bytes of `arr`, as `dt.save` writes them."""
    host = np.ascontiguousarray(arr)
    return memoryview(host.astype(host.dtype.newbyteorder("<"), copy=False).reshape(-1)
                      .view(np.uint8))


def write_file(directory, name, pieces):
    """Write `pieces` ({key: host array}) to `directory/name`; returns the file's record
    (size, sha256) and {key: (byte offset, sha256 of the piece)}."""
    path = os.path.join(directory, name)
    serialization.save(pieces, path)
    at = serialization.payload_offsets(path)
    with open(path, "rb") as src:
        size = src.seek(0, os.SEEK_END)
        src.seek(size - 32)
        digest = src.read(32).hex()
    where = {key: (at[key], hashlib.sha256(_bytes(arr)).hexdigest())
             for key, arr in pieces.items()}
    return {"size": size, "sha256": digest}, where


class Reader:
    """Reads checked pieces from the files of the checkpoint in `directory` (`files`: the
    metadata's {name: record}); each file is opened once."""

    def __init__(self, directory, files):
        self.directory, self.files, self.open = directory, files, {}

    def piece(self, path, chunk, dtype):
        """The array of `chunk` (a metadata record of the piece of tensor `path`), read
        with one seek and checked against its sha256; errors name the file."""
        name = chunk["file"]
        full = os.path.join(self.directory, name)
        src = self._file(name, full)
        shape = tuple(chunk["shape"])
        buf = bytearray(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        src.seek(chunk["at"])
        if src.readinto(buf) != len(buf) or hashlib.sha256(buf).hexdigest() != chunk["sha256"]:
            raise RuntimeError(f"dcp.load: {full} is corrupted: the bytes of {path} (piece at "
                               f"offsets {tuple(chunk['offsets'])}) do not match their sha256 "
                               "checksum")
        return np.frombuffer(buf, dtype.newbyteorder("<")).reshape(shape)

    def _file(self, name, full):
        if name not in self.open:
            try:
                src = open(full, "rb")
            except FileNotFoundError:
                raise FileNotFoundError(f"dcp.load: {full} is missing (the checkpoint's "
                                        "metadata lists it)") from None
            size = os.fstat(src.fileno()).st_size
            if size != self.files[name]["size"]:
                src.close()
                raise RuntimeError(f"dcp.load: {full} is corrupted: {size} bytes, the "
                                   f"metadata records {self.files[name]['size']}")
            self.open[name] = src
        return self.open[name]

    def close(self):
        for src in self.open.values():
            src.close()
        self.open.clear()
