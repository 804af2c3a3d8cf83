"""Distributed checkpoints (`dtrain.distributed.checkpoint`) on real MPI ranks, float64: a
checkpoint saved by N ranks under one strategy loads on M ranks under another with the
parameters and Adam state equal to the saved ones exactly, and the next step equals an
uninterrupted run; a rank dying mid-save leaves the previous checkpoint loadable."""
import numpy as np
import pytest

COMMON = r'''
import os
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
import dtrain.distributed.checkpoint as dcp
from dtrain import nn
from dtrain.distributed.checkpoint.planner import flatten
from dtrain.distributed.fsdp import fully_shard

dt.set_default_dtype(dt.float64)
STRATEGY, DIR, REF = os.environ["STRATEGY"], os.environ["CKPT"], os.environ["REF"]
K = int(os.environ.get("K", "2"))
if STRATEGY != "single":
    dist.init_process_group()
n = dist.get_world_size() if STRATEGY != "single" else 1
r = dist.get_rank() if STRATEGY != "single" else 0
rng = np.random.default_rng(0)
X, Y = rng.standard_normal((12, 6)), rng.standard_normal((12, 5))


def net():
    dt.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 5))


def build(strategy):
    model = net()
    if strategy in ("fsdp", "zero2"):
        for layer in (model[0], model[2]):
            fully_shard(layer, reshard_after_forward=strategy == "fsdp")
        if strategy == "fsdp":  # (zero2: the root stays unsharded)
            fully_shard(model)
    if strategy == "ddp":
        model = dist.DistributedDataParallel(model)
    if strategy == "zero1":
        return model, dist.optim.ZeroRedundancyOptimizer(
            model.parameters(), dt.optim.Adam, reduce_scatter_gradients=True, lr=0.01)
    return model, dt.optim.Adam(model.parameters(), lr=0.01)


def train(model, opt, steps, rows):
    for step in steps:
        x = dt.tensor(X[rows] + step)
        opt.zero_grad()
        ((model(x) - dt.tensor(Y[rows])) ** 2).mean().backward()
        opt.step()


def gathered(model, opt):
    """{path: full array} of get_state_dict's tensors, assembled from every rank's pieces."""
    msd, osd = dcp.get_state_dict(model, opt)
    tensors, _ = flatten({"model": msd, "optim": osd})
    mine = {p: (leaf.global_shape, leaf.offsets, leaf.tensor.numpy().copy())
            for p, leaf in tensors.items()}
    parts = [mine]
    if STRATEGY != "single":
        parts = [None] * n
        dist.all_gather_object(parts, mine)
    full = {}
    for part in parts:
        for p, (shape, offsets, arr) in part.items():
            out = full.setdefault(p, np.full(shape, np.nan))
            out[tuple(slice(o, o + s) for o, s in zip(offsets, arr.shape))] = arr
    return full


rows = slice(r * 12 // n, (r + 1) * 12 // n)
'''

SAVE = COMMON + r'''
model, opt = build(STRATEGY)
train(model, opt, range(K), rows)
msd, osd = dcp.get_state_dict(model, opt)
state = {"model": msd, "optim": osd, "step": K}
if os.environ.get("ASYNC"):
    future = dcp.async_save(state, checkpoint_id=DIR)
    ref = gathered(model, opt)  # (collectives while the save is written)
    train(model, opt, [K], rows)  # the step goes on; the staged arrays are written
    future.result()
    assert future.done()
else:
    dcp.save(state, checkpoint_id=DIR)
    ref = gathered(model, opt)
if r == 0:
    dt.save(ref, REF)
print(f"RANK {r} SAVED")
'''

LOAD = COMMON + r'''
model, opt = build(STRATEGY)
msd, osd = dcp.get_state_dict(model, opt)
state = {"model": msd, "optim": osd, "step": -1}
dcp.load(state, checkpoint_id=DIR)
assert state["step"] == K, state["step"]
dcp.set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
ref, now = dt.load(REF), gathered(model, opt)
assert sorted(ref) == sorted(now), (sorted(ref), sorted(now))
for p in ref:
    np.testing.assert_array_equal(now[p], ref[p], err_msg=p)
# full_state_dict gathers the same tensors, by name, and loads them back
if STRATEGY in ("fsdp", "ddp", "zero1"):
    full = dcp.StateDictOptions(full_state_dict=True)
    fmsd, fosd = dcp.get_state_dict(model, opt, options=full)
    for name, value in fmsd.items():
        np.testing.assert_array_equal(value.numpy(), ref["model." + name], err_msg=name)
    for name, values in fosd["state"].items():
        for k, v in values.items():
            np.testing.assert_array_equal(v.numpy(), ref[f"optim.state.{name}.{k}"])
    again, again_opt = build(STRATEGY)
    dcp.set_state_dict(again, again_opt, model_state_dict=fmsd, optim_state_dict=fosd,
                       options=full)
    for p, v in gathered(again, again_opt).items():
        np.testing.assert_array_equal(v, ref[p], err_msg=p)
# one more step equals an uninterrupted single-process run of K + 1 steps
train(model, opt, [K], rows)
plain = net()
plain_opt = dt.optim.Adam(plain.parameters(), lr=0.01)
train(plain, plain_opt, range(K + 1), slice(None))
after = gathered(model, opt)
for name, p in plain.named_parameters():
    np.testing.assert_allclose(after["model." + name], p.detach().numpy(), rtol=0, atol=1e-10,
                               err_msg=name)
    for k, v in plain_opt.state[p].items():
        np.testing.assert_allclose(after[f"optim.state.{name}.{k}"], v.numpy(), rtol=0,
                                   atol=1e-10, err_msg=f"{name} {k}")
print(f"RANK {r} LOADED")
'''


def _env(tmp_path, strategy, **extra):
    return {"STRATEGY": strategy, "CKPT": str(tmp_path / "ckpt"), "REF": str(tmp_path / "ref"),
            **extra}


@pytest.mark.parametrize("saved, loaded, asynchronous", [
    (("fsdp", 4), ("ddp", 2), False),
    (("ddp", 2), ("fsdp", 3), True),
    (("zero1", 2), ("single", 1), False),
    (("fsdp", 2), ("zero1", 4), False),
    (("single", 1), ("fsdp", 2), True),
    (("zero2", 3), ("fsdp", 4), False),
], ids=["fsdp4-ddp2", "ddp2-fsdp3-async", "zero1_2-single", "fsdp2-zero1_4", "single-fsdp2",
        "zero2_3-fsdp4"])
def test_checkpoint_reshards_across_strategies_and_world_sizes(mpirun, tmp_path, saved,
                                                                loaded, asynchronous):
    extra = {"ASYNC": "1"} if asynchronous else {}
    out = mpirun(saved[1], SAVE, timeout=180, env=_env(tmp_path, saved[0], **extra)).stdout
    assert out.count("SAVED") == saved[1], out
    out = mpirun(loaded[1], LOAD, timeout=180, env=_env(tmp_path, loaded[0])).stdout
    assert out.count("LOADED") == loaded[1], out


KILLED = COMMON + r'''
import dtrain.core.serialization as serialization
model, opt = build(STRATEGY)
train(model, opt, range(K), rows)
msd, osd = dcp.get_state_dict(model, opt)
dcp.save({"model": msd, "optim": osd, "step": K}, checkpoint_id=DIR)
ref = gathered(model, opt)
if r == 0:
    dt.save(ref, REF)
train(model, opt, [K], rows)
write = serialization._write_array


def dying(put, arr):
    write(put, arr)  # one array is out, the rest of the file never comes
    if r == 1:
        os._exit(3)


serialization._write_array = dying
msd, osd = dcp.get_state_dict(model, opt)
dcp.save({"model": msd, "optim": osd, "step": K + 1}, checkpoint_id=DIR)
print("NOT REACHED")
'''


def test_rank_dying_mid_save_leaves_the_previous_checkpoint(mpirun, tmp_path):
    proc = mpirun(2, KILLED, timeout=180, env=_env(tmp_path, "ddp"), check=False)
    assert proc.returncode != 0 and "NOT REACHED" not in proc.stdout, proc.stdout
    # the same folder still loads, into one process, as the checkpoint before the crash
    out = mpirun(1, LOAD, timeout=180, env=_env(tmp_path, "single")).stdout
    assert "LOADED" in out, out
    # the dead save's files stay until the next save there commits, which deletes them
    import dtrain as dt
    import dtrain.distributed.checkpoint as dcp
    folder = tmp_path / "ckpt"
    before = {p.name for p in folder.iterdir()}
    assert len(before - set(dt.load(folder / ".metadata")["files"]) - {".metadata"}) >= 1
    dcp.save({"w": dt.ones(3)}, checkpoint_id=folder)
    assert {p.name for p in folder.iterdir()} == \
        set(dt.load(folder / ".metadata")["files"]) | {".metadata"}


# -- one process: the format's checks --------------------------------------------------------
def _state(seed=0):
    import dtrain as dt
    import dtrain.distributed.checkpoint as dcp
    from dtrain import nn
    dt.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = dt.optim.Adam(model.parameters(), lr=0.1)
    model(dt.randn(5, 4)).sum().backward()
    opt.step()
    msd, osd = dcp.get_state_dict(model, opt)
    return model, opt, {"model": msd, "optim": osd, "epoch": 3}


def test_flipped_byte_is_named_and_errors_are_clear(tmp_path):
    import dtrain as dt
    import dtrain.distributed.checkpoint as dcp
    _, _, state = _state()
    dcp.save(state, checkpoint_id=tmp_path)
    meta = dt.load(tmp_path / ".metadata")
    chunk = meta["tensors"]["model.0.weight"]["chunks"][0]
    assert meta["files"][chunk["file"]]["rank"] == 0 and meta["values"]["epoch"] == 3
    assert meta["tensors"]["model.0.weight"]["shape"] == [3, 4]
    # a fresh state dict loads, so does a part of it; a missing key, a shape mismatch fail
    _, _, fresh = _state(seed=1)
    dcp.load(fresh, checkpoint_id=tmp_path)
    np.testing.assert_array_equal(fresh["model"]["0.weight"].numpy(),
                                  state["model"]["0.weight"].numpy())
    assert fresh["epoch"] == 3
    extra = {**fresh, "model": {**fresh["model"], "2.weight": dt.zeros(2)}}
    with pytest.raises(KeyError, match=r"tensors missing from the checkpoint: model\.2\.weight"):
        dcp.load(extra, checkpoint_id=tmp_path)
    _, _, part = _state(seed=2)
    dcp.load({"model": part["model"]}, checkpoint_id=tmp_path)  # the model alone
    np.testing.assert_array_equal(part["model"]["0.weight"].numpy(),
                                  state["model"]["0.weight"].numpy())
    assert isinstance(meta["values"]["optim.param_groups"], list)  # a tensor-free list: whole
    wrong = {**fresh, "model": {**fresh["model"], "1.bias": dt.zeros(3)}}
    with pytest.raises(ValueError, match=r"size mismatch for model\.1\.bias: the checkpoint "
                                         r"holds shape \(2,\), the state dict expects \(3,\)"):
        dcp.load(wrong, checkpoint_id=tmp_path)
    path = tmp_path / chunk["file"]
    data = bytearray(path.read_bytes())
    data[chunk["at"] + 5] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=rf"{path} is corrupted: the bytes of model\.0\.weight"):
        dcp.load(fresh, checkpoint_id=tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        dcp.load(fresh, checkpoint_id=tmp_path / "never")
    data[chunk["at"] + 5] ^= 0x10  # the piece mended, a byte of the file's header flipped
    data[40] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=rf"{path} is corrupted: its header \(the first "
                                           r"\d+ bytes\) does not match its sha256 checksum"):
        dcp.load(fresh, checkpoint_id=tmp_path)
    data[40] ^= 0x01
    path.write_bytes(bytes(data))
    dcp.load(fresh, checkpoint_id=tmp_path)  # mended: it loads
    meta_path = tmp_path / ".metadata"  # a byte of the metadata's header flipped
    meta_bytes = bytearray(meta_path.read_bytes())
    meta_bytes[40] ^= 0x01
    meta_path.write_bytes(bytes(meta_bytes))
    with pytest.raises(RuntimeError, match=rf"metadata is unreadable: dt.load: {meta_path} is "
                                           "corrupted: its sha256 checksum does not match"):
        dcp.load(fresh, checkpoint_id=tmp_path)


def test_async_save_equals_save_and_writes_the_staged_arrays(tmp_path):
    import dtrain as dt
    import dtrain.distributed.checkpoint as dcp
    model, opt, state = _state()
    before = {k: v.numpy().copy() for k, v in state["model"].items()}
    dcp.save(state, checkpoint_id=tmp_path / "sync")
    future = dcp.async_save(state, checkpoint_id=tmp_path / "async")
    with dt.no_grad():
        for p in model.parameters():  # the training step goes on meanwhile
            p.add_(1.0)
    future.result()
    assert future.done()
    loaded = {}
    for name in ("sync", "async"):
        _, _, loaded[name] = _state(seed=2)
        dcp.load(loaded[name], checkpoint_id=tmp_path / name)
    for key, value in loaded["sync"]["model"].items():
        np.testing.assert_array_equal(loaded["async"]["model"][key].numpy(), value.numpy())
        np.testing.assert_array_equal(value.numpy(), before[key])
    for name, values in loaded["sync"]["optim"]["state"].items():
        for k, v in values.items():
            np.testing.assert_array_equal(loaded["async"]["optim"]["state"][name][k].numpy(),
                                          v.numpy())
    # saving again into a folder replaces its files (no stale pieces are left)
    dcp.save(state, checkpoint_id=tmp_path / "sync")
    assert len(list((tmp_path / "sync").glob("*.distcp"))) == 1


def test_load_reads_only_the_rows_it_needs(tmp_path, monkeypatch):
    """A piece is checked by blocks of rows: corrupting the first block fails the loads that
    read it and no other (so a rank taking rows 60-80 reads only their block)."""
    import dtrain as dt
    import dtrain.distributed.checkpoint as dcp
    from dtrain.distributed.checkpoint import storage
    monkeypatch.setattr(storage, "BLOCK", 16 * 8 * 20)  # 20 rows of 16 float64 per block
    full = dt.tensor(np.arange(100 * 16, dtype=np.float64).reshape(100, 16))
    dcp.save({"w": full}, checkpoint_id=tmp_path)
    chunk = dt.load(tmp_path / ".metadata")["tensors"]["w"]["chunks"][0]
    assert chunk["block_rows"] == 20 and len(chunk["sha256"]) == 5
    path = tmp_path / chunk["file"]
    data = bytearray(path.read_bytes())
    data[chunk["at"] + 3] ^= 1  # row 0
    path.write_bytes(bytes(data))
    tail = dcp.ShardedTensor(dt.zeros(20, 16), (100, 16), (60, 0))
    dcp.load({"w": tail}, checkpoint_id=tmp_path)
    np.testing.assert_array_equal(tail.local.numpy(), full.numpy()[60:80])
    head = dcp.ShardedTensor(dt.zeros(30, 16), (100, 16), (10, 0))
    with pytest.raises(RuntimeError, match=r"the bytes of w \(piece at offsets \(0, 0\), "
                                           r"rows 0 and on\)"):
        dcp.load({"w": head}, checkpoint_id=tmp_path)
