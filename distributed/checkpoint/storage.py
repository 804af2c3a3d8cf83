"""The files of a distributed checkpoint: one per writing rank, in dtrain's safe format
(`dt.save` of a flat dict of arrays: written atomically and fsync'ed, sha256 of the whole
file at its end). Each piece is also checksummed by blocks of whole rows (about BLOCK
bytes), so that a reader seeks to the rows it needs and checks just those, and the file's
header (everything before its first piece) has its own sha256, checked when it is opened."""
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dtrain.core import serialization

BLOCK = 4 << 20


def piece_name(path, offsets):
    """The key of a piece in its file: the tensor's path and the piece's offsets."""
    return f"{path}@{','.join(map(str, offsets))}"


def _rows(shape):
    return shape[0] if shape else 1


def write_file(directory, name, pieces):
    """Write `pieces` ({key: non-empty host array}) to `directory/name`; returns the
    file's record (size, sha256, header_bytes and header_sha256: the bytes before the first
    piece) and {key: {"at": byte offset, "block_rows": rows per block, "sha256": [one per
    block]}}. The blocks are hashed on a second thread while the file is written (hashlib
    releases the GIL)."""
    path = os.path.join(directory, name)
    with ThreadPoolExecutor(max_workers=1) as pool:
        blocks = pool.submit(lambda: {key: _block_hashes(arr) for key, arr in pieces.items()})
        serialization.save(pieces, path)
        at = serialization.payload_offsets(path)
        with open(path, "rb") as src:
            header = src.read(min(at.values()))
            size = src.seek(0, os.SEEK_END)
            src.seek(size - 32)
            digest = src.read(32).hex()
        where = {key: {"at": at[key], **stored} for key, stored in blocks.result().items()}
    return {"size": size, "sha256": digest, "header_bytes": len(header),
            "header_sha256": hashlib.sha256(header).hexdigest()}, where


def _block_hashes(arr):
    """{"block_rows", "sha256": [...]}: `arr` hashed by blocks of about BLOCK bytes of
    whole rows (along dim 0; a 0-d array is one row)."""
    data, rows = serialization.array_bytes(arr), _rows(arr.shape)
    row_bytes = len(data) // rows
    block = max(1, BLOCK // row_bytes)
    return {"block_rows": block, "sha256": [
        hashlib.sha256(data[i * row_bytes:(i + block) * row_bytes]).hexdigest()
        for i in range(0, rows, block)]}


class Reader:
    """Reads checked pieces from the files of the checkpoint in `directory` (`files`: the
    metadata's {name: record}); each file is opened once."""

    def __init__(self, directory, files):
        self.directory, self.files, self.open = directory, files, {}

    def rows(self, path, chunk, dtype, lo, hi):
        """Rows [lo, hi) of the piece `chunk` (a metadata record of a piece of tensor
        `path`; a 0-d piece has one row): the blocks holding them are read with one seek
        and checked against their sha256. Errors name the file."""
        name = chunk["file"]
        full = os.path.join(self.directory, name)
        src = self._file(name, full)
        shape = tuple(chunk["shape"])
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        block = chunk["block_rows"]
        first, last = lo // block, (hi - 1) // block + 1
        start, stop = first * block, min(last * block, _rows(shape))
        buf = bytearray((stop - start) * row_bytes)
        src.seek(chunk["at"] + start * row_bytes)
        got = src.readinto(buf)
        for i, digest in enumerate(chunk["sha256"][first:last]):
            part = memoryview(buf)[i * block * row_bytes:(i + 1) * block * row_bytes]
            if got != len(buf) or hashlib.sha256(part).hexdigest() != digest:
                raise RuntimeError(
                    f"dcp.load: {full} is corrupted: the bytes of {path} (piece at offsets "
                    f"{tuple(chunk['offsets'])}, rows {(first + i) * block} and on) do not "
                    "match their sha256 checksum")
        arr = np.frombuffer(buf, dtype.newbyteorder("<")).reshape((stop - start,) + shape[1:])
        return arr[lo - start:hi - start] if shape else arr.reshape(())

    def _file(self, name, full):
        if name not in self.open:
            try:
                src = open(full, "rb")
            except FileNotFoundError:
                raise FileNotFoundError(f"dcp.load: {full} is missing (the checkpoint's "
                                        "metadata lists it)") from None
            record = self.files[name]
            size = os.fstat(src.fileno()).st_size
            problem = None
            if size != record["size"]:
                problem = f"{size} bytes, the metadata records {record['size']}"
            elif hashlib.sha256(src.read(record["header_bytes"])).hexdigest() != \
                    record["header_sha256"]:
                problem = (f"its header (the first {record['header_bytes']} bytes) does not "
                           "match its sha256 checksum")
            if problem:
                src.close()
                raise RuntimeError(f"dcp.load: {full} is corrupted: {problem}")
            self.open[name] = src
        return self.open[name]

    def close(self):
        for src in self.open.values():
            src.close()
        self.open.clear()
