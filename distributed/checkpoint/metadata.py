"""A distributed checkpoint's `.metadata` file, written last (by rank 0, atomically, in
dtrain's safe format): its presence is what makes the checkpoint complete.

    {"version": 1, "world_size": N,
     "files": {name: {"rank": writer, "size": bytes, "sha256": hex of the whole file,
                      "header_bytes": n, "header_sha256": hex of its first n bytes}},
     "tensors": {path: {"shape": global shape, "dtype": name, "chunks": [
         {"offsets", "shape", "file", "at": byte offset in the file,
          "block_rows", "sha256": [one per block of block_rows rows]}, ...]}},
     "values": {path: any non-tensor value, e.g. a step count or a learning rate}}
"""
import os

from dtrain.core import serialization

NAME = ".metadata"
VERSION = 1


def write(directory, meta):
    serialization.save({"version": VERSION, **meta}, os.path.join(directory, NAME))


def read(directory):
    """The metadata of the checkpoint in `directory`; a clear error when it is incomplete."""
    path = os.path.join(directory, NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dcp.load: {directory} holds no complete checkpoint (no "
                                f"{NAME} file: nothing was saved there, or the save was "
                                "interrupted before every rank's data was written)")
    try:
        meta = serialization.load(path)
    except RuntimeError as err:  # e.g. its sha256 does not match: named by dt.load
        raise RuntimeError(f"dcp.load: the checkpoint's metadata is unreadable: {err}") \
            from None
    if meta.get("version") != VERSION:
        raise RuntimeError(f"dcp.load: {path} has version {meta.get('version')!r}; this "
                           f"dtrain reads version {VERSION}")
    return meta
