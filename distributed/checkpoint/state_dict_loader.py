"""`dcp.load`: fill a state dict in place from a checkpoint written at any world size under
any sharding. Each rank reads only the rows of the saved pieces that overlap what its
tensors hold (one seek per piece, the blocks read checked against their sha256) and copies
the overlaps in: the resharding is box arithmetic on global offsets (planner.overlap)."""
import os

import numpy as np

from dtrain.core import backend
from dtrain.distributed.checkpoint import metadata, planner, storage
from dtrain.distributed.checkpoint.state_dict_saver import wait_for_pending


def load(state_dict, *, checkpoint_id, process_group=None):
    """Load the checkpoint in the folder `checkpoint_id` into `state_dict` in place (its
    Tensors and `ShardedTensor`s are filled, its other values replaced). As PyTorch's, it
    loads what `state_dict` asks for, which may be part of what was saved (e.g. the model
    without its optimizer); keys missing from the checkpoint and shape mismatches are
    errors. Each rank reads on its own (`process_group`: PyTorch's signature)."""
    wait_for_pending()
    directory = os.fspath(checkpoint_id)
    meta = metadata.read(directory)
    tensors, values = planner.flatten(state_dict)
    _check_keys(directory, sorted(set(tensors) - set(meta["tensors"])),
                sorted(set(values) - set(meta["values"])))
    reader = storage.Reader(directory, meta["files"])
    try:
        for path, leaf in tensors.items():
            _fill(path, leaf, meta["tensors"][path], reader)
    finally:
        reader.close()
    for path, (container, key, _) in values.items():
        container[key] = meta["values"][path]


def _check_keys(directory, missing_tensors, missing_values):
    problems = [f"{what}: {', '.join(keys[:8])}"
                + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
                for what, keys in (("tensors missing from the checkpoint", missing_tensors),
                                   ("values missing from the checkpoint", missing_values))
                if keys]
    if problems:
        raise KeyError(f"dcp.load: the state dict does not match the checkpoint in "
                       f"{directory}: " + "; ".join(problems))


def _fill(path, leaf, record, reader):
    """Copy the saved pieces overlapping this rank's box of tensor `path` into it."""
    if tuple(record["shape"]) != leaf.global_shape:
        raise ValueError(f"dcp.load: size mismatch for {path}: the checkpoint holds shape "
                         f"{tuple(record['shape'])}, the state dict expects {leaf.global_shape}")
    dtype = np.dtype(record["dtype"])
    out = np.empty(leaf.shape, dtype)
    covered = 0
    for chunk in record["chunks"]:
        both = planner.overlap(leaf.offsets, leaf.shape, chunk["offsets"], chunk["shape"])
        if both is not None:
            mine, theirs = both
            rows = theirs[0] if theirs else slice(0, 1)
            piece = reader.rows(path, chunk, dtype, rows.start, rows.stop)
            out[mine] = piece[(slice(None),) + theirs[1:]] if theirs else piece
            covered += out[mine].size
    if covered != out.size:
        raise RuntimeError(f"dcp.load: the checkpoint holds {covered} of the {out.size} "
                           f"elements of {path} at offsets {leaf.offsets}")
    target = leaf.tensor
    target._data[...] = backend.to_device(out.astype(leaf.dtype, copy=False),
                                          backend.device_of(target._data))
    target._version[0] += 1
