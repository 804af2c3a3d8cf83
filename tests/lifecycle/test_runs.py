"""Run folders, explicit resume, checkpoint rotation and non-finite stops, end to end with real
ranks started by `dtrain launch` (issue 11, items 4, 5 and 6)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
from dtrain.launcher.rundir import Checkpoints, load_full

FAST = ["trainer.epochs=1", "trainer.progress=false"]


def launch(dtrain_cli, configs, out, *overrides, timeout=120, **kw):
    return dtrain_cli("launch", configs / "digits_mlp.yaml", f"experiment.output_dir={out}",
                      *FAST, *overrides, timeout=timeout, **kw)


def records(run_dir):
    """metrics.jsonl parsed strictly: bare NaN/Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return [json.loads(line, parse_constant=refuse)
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_each_launch_gets_a_fresh_run_folder_and_resuming_is_explicit(dtrain_cli, configs,
                                                                      tmp_path):
    out = tmp_path / "runs"
    first = launch(dtrain_cli, configs, out)
    assert first.returncode == 0, first.stderr
    # today's complaint: a rerun with other overrides "resumed from step 675 of 46" and
    # trained nothing; now it is a new run from step 0 in its own folder
    second = launch(dtrain_cli, configs, out, "optimizer.lr=0.01", "trainer.max_steps=20")
    assert second.returncode == 0, second.stderr
    assert f"run directory {out / 'version_1'} (a new run)" in second.stdout
    assert "resumed" not in second.stdout
    assert [r["step"] for r in records(out / "version_1") if r["split"] == "train"] == [20]
    assert (out / "latest").resolve() == out / "version_1"
    assert "summary: completed; 20/20 steps" in second.stdout
    assert f"checkpoint: {out / 'version_1' / 'checkpoint_000000020'}" in second.stdout

    # resuming version_1 with a longer schedule continues it (its config differs only in
    # keys that do not change the result)
    more = launch(dtrain_cli, configs, out, "optimizer.lr=0.01", "trainer.max_steps=30",
                  "trainer.resume=latest")
    assert more.returncode == 0, more.stderr
    assert f"run directory {out / 'version_1'} (continuing it)" in more.stdout
    assert "resumed from step 20 of 30" in more.stdout
    assert [r["step"] for r in records(out / "version_1") if r["split"] == "train"] == [20, 30]

    # keys that change the result: refused before a rank starts, naming each key
    changed = launch(dtrain_cli, configs, out, "trainer.resume=latest", "trainer.max_steps=40",
                     "optimizer.name=adam", "~optimizer.momentum")
    assert changed.returncode == 2, changed.stderr
    for text in ["was written with a different config", "optimizer.name: 'sgd' -> 'adam'",
                 "optimizer.momentum: 0.9 -> None", "optimizer.lr: 0.01 -> 0.1",
                 "trainer.resume_allow_changes=true"]:
        assert text in changed.stderr
    assert "[rank 0]" not in changed.stdout
    # told to go on anyway: today `KeyError: 'amsgrad'`; now Adam starts with fresh state
    forced = launch(dtrain_cli, configs, out, f"trainer.resume={out / 'version_1'}",
                    "trainer.max_steps=40", "optimizer.lr=0.01", "optimizer.name=adam",
                    "~optimizer.momentum", "trainer.resume_allow_changes=true")
    assert forced.returncode == 0, forced.stderr
    assert "resume: optimizer 'adam' replaces the checkpoint's; its state starts afresh" in \
        forced.stdout and "resumed from step 30 of 40" in forced.stdout


def test_resume_from_a_checkpoint_file_starts_a_new_run_from_it(dtrain_cli, configs, tmp_path):
    out = tmp_path / "runs"
    assert launch(dtrain_cli, configs, out, "trainer.max_steps=10").returncode == 0
    ckpt = out / "version_0" / "checkpoint_000000010"
    branch = launch(dtrain_cli, configs, out, "trainer.max_steps=15", f"trainer.resume={ckpt}")
    assert branch.returncode == 0, branch.stderr
    assert "(a new run)" in branch.stdout and f"resumed from step 10 of 15 ({ckpt})" in \
        branch.stdout
    assert Checkpoints(out / "version_0").entries()[-1]["step"] == 10   # the source untouched
    assert Checkpoints(out / "version_1").entries()[-1]["step"] == 15


@pytest.mark.parametrize("resume, message", [
    ("latest", "no run under"),
    ("/nonexistent/checkpoint_000000010", "no such checkpoint or run directory"),
])
def test_resume_that_cannot_be_done_is_exit_2(dtrain_cli, configs, tmp_path, resume, message):
    proc = launch(dtrain_cli, configs, tmp_path / "runs", f"trainer.resume={resume}")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_concurrent_launches_never_share_a_folder(configs, tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "dtrain.launcher", "launch", str(configs / "digits_mlp.yaml"),
           f"experiment.output_dir={out}", "trainer.max_steps=30", "trainer.progress=false"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.is_symlink()) == \
        ["version_0", "version_1"]
    for run in ("version_0", "version_1"):
        steps = [r["step"] for r in records(out / run) if r["split"] == "train"]
        assert steps == [20, 30]   # log_every 20, and the last step


def test_rotation_keeps_this_runs_newest_checkpoints(tmp_path):
    """Today's failure: with older, higher-numbered or corrupt files in the folder, each new
    checkpoint was deleted as soon as it was written."""
    run = tmp_path / "version_0"
    run.mkdir()
    (run / "checkpoint_000000675").mkdir()                                # not this run's
    dcp.save({"step": 999}, checkpoint_id=run / "checkpoint_000000999")   # not this run's
    ckpts = Checkpoints(run)
    for step in (10, 20, 30):
        ckpts.save({"step": step, "w": dt.full((3,), float(step))}, step, keep_last=2)
    assert [e["step"] for e in ckpts.entries()] == [20, 30]
    assert not (run / "checkpoint_000000010").exists()
    assert ckpts.newest() == run / "checkpoint_000000030"
    assert load_full(ckpts.newest())["step"] == 30
    assert (run / "checkpoint_000000675").exists()  # others' folders: never touched
    assert (run / "checkpoint_000000999").exists()
    # a save that did not commit its metadata is not complete: the previous one is newest
    (run / "checkpoint_000000030" / ".metadata").unlink()
    assert [e["step"] for e in ckpts.entries()] == [20]
    assert ckpts.newest() == run / "checkpoint_000000020"


def test_a_continued_run_ignores_and_keeps_files_that_are_not_its_checkpoints(
        dtrain_cli, configs, tmp_path):
    """Today: a stale higher-numbered file was resumed from, and keep_last deleted each new
    checkpoint as soon as it was written (newest *names* kept), exit 0."""
    out = tmp_path / "runs"
    assert launch(dtrain_cli, configs, out, "trainer.max_steps=20").returncode == 0
    run = out / "version_0"
    (run / "checkpoint_000000675").mkdir()                               # an interrupted save
    dcp.save({"step": 999}, checkpoint_id=run / "checkpoint_000000999")  # not this run's
    more = launch(dtrain_cli, configs, out, "trainer.max_steps=50", "trainer.checkpoint_every=10",
                  "trainer.keep_last=2", "trainer.resume=latest")
    assert more.returncode == 0, more.stderr
    assert "resumed from step 20 of 50" in more.stdout
    assert [e["step"] for e in Checkpoints(run).entries()] == [40, 50]
    assert load_full(run / "checkpoint_000000050")["step"] == 50
    assert not (run / "checkpoint_000000030").exists()
    assert (run / "checkpoint_000000675").exists() and \
        (run / "checkpoint_000000999").exists()


def test_a_corrupted_shard_is_named_and_the_previous_checkpoint_resumed(dtrain_cli, configs,
                                                                        tmp_path):
    """fsdp on 2 ranks: rank 0's file of step 20 has a flipped byte; the ranks that read it
    fail, every rank agrees to skip the checkpoint (none waits in a collective), and the run
    resumes from step 10."""
    out, fsdp = tmp_path / "runs", ["distributed.nproc_per_node=2", "distributed.strategy=fsdp"]
    assert launch(dtrain_cli, configs, out, *fsdp, "trainer.max_steps=20",
                  "trainer.checkpoint_every=10").returncode == 0
    shard = next((out / "version_0" / "checkpoint_000000020").glob("__0_*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    more = launch(dtrain_cli, configs, out, *fsdp, "trainer.max_steps=25",
                  "trainer.resume=latest")
    assert more.returncode == 0, more.stderr
    assert f"skipping unreadable checkpoint {shard.parent}: RuntimeError: dcp.load: {shard} " \
           "is corrupted" in more.stdout
    assert "resumed from step 10 of 25" in more.stdout


def test_nonfinite_loss_stops_with_exit_3_and_no_checkpoint(dtrain_cli, configs, tmp_path):
    out = tmp_path / "runs"
    proc = launch(dtrain_cli, configs, out, "optimizer.lr=1e6", "trainer.checkpoint_every=1")
    assert proc.returncode == 3, proc.stderr
    run = out / "version_0"
    step = int(proc.stderr.split("non-finite loss at step ")[1].split(" ")[0])
    assert step >= 1 and "stopping without a checkpoint" in proc.stderr
    rows = records(run)
    assert rows[-1]["step"] == step and rows[-1]["loss"] is None
    assert rows[-1]["nonfinite"]["loss"] in ("nan", "inf", "-inf")
    # checkpoints written before the blow-up hold finite weights only
    for e in Checkpoints(run).entries():
        state = load_full(run / e["file"], ["model"])
        assert all(np.isfinite(v.numpy()).all() for v in state["model"].values())
    plot = dtrain_cli("plot", run)
    assert plot.returncode == 0 and (run / "curves.png").stat().st_size > 10_000


def test_nonfinite_ignore_never_rotates_good_checkpoints_out(dtrain_cli, configs, tmp_path):
    out = tmp_path / "runs"
    proc = launch(dtrain_cli, configs, out, "optimizer.lr=1e6", "trainer.checkpoint_every=1",
                  "trainer.keep_last=2", "trainer.on_nonfinite=ignore", "trainer.max_steps=12")
    assert proc.returncode == 0, proc.stderr
    assert "not writing a checkpoint: the model has non-finite parameters" in proc.stdout
    run = out / "version_0"
    entries = Checkpoints(run).entries()
    assert len(entries) == 2 and entries[-1]["step"] < 12
    for e in entries:
        state = load_full(run / e["file"], ["model"])
        assert all(np.isfinite(v.numpy()).all() for v in state["model"].values())


NAN_ONCE = """
from dtrain.launcher.models import mlp

def build(hidden):
    model = mlp((1, 8, 8), 10, hidden=hidden)
    forward, calls = model.forward, [0]

    def poisoned(x):
        calls[0] += 1
        out = forward(x)
        return out * float("nan") if model.training and calls[0] == 5 else out
    model.forward = poisoned
    return model
"""


def test_skip_step_drops_only_the_bad_step(dtrain_cli, configs, tmp_path):
    (tmp_path / "poison.py").write_text(NAN_ONCE)
    out = tmp_path / "runs"
    proc = launch(dtrain_cli, configs, out, "model.name=null", "model.target=poison:build",
                  "model.args={hidden: [32]}", "trainer.on_nonfinite=skip_step",
                  env={"PYTHONPATH": os.pathsep.join(filter(None, [
                      str(tmp_path), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr
    assert "step 5: non-finite loss: step skipped" in proc.stderr
    state = load_full(sorted((out / "version_0").glob("checkpoint_*"))[-1], ["model"])
    assert all(np.isfinite(v.numpy()).all() for v in state["model"].values())
    assert [r for r in records(out / "version_0") if r["split"] == "test"][-1]["accuracy"] > 0.8


def test_validation_split_and_early_stop_at_target_accuracy(dtrain_cli, configs, tmp_path):
    out = tmp_path / "runs"
    proc = launch(dtrain_cli, configs, out, "data.val_split=0.2", "trainer.epochs=15",
                  "trainer.target_accuracy=0.9")
    assert proc.returncode == 0, proc.stderr
    assert "target accuracy 0.9 reached at step" in proc.stdout
    rows = records(out / "version_0")
    val = [r for r in rows if r["split"] == "val"]
    assert val and val[-1]["accuracy"] >= 0.9 and all(r["accuracy"] < 0.9 for r in val[:-1])
    # 1437 training images of digits, 20 % held out: 1150 left, 36 steps of 32 per epoch
    assert val[0]["step"] == 36
    assert val[-1]["step"] < 15 * 36
    assert "summary: target accuracy reached; " in proc.stdout
    assert "test loss" in proc.stdout.split("target accuracy 0.9 reached")[1]


def test_gradient_accumulation_equals_the_larger_batch(dtrain_cli, configs, tmp_path):
    def weights(run):
        state = load_full(sorted(run.glob("checkpoint_*"))[-1], ["model"])
        return {k: v.numpy() for k, v in state["model"].items()}
    common = ["trainer.max_steps=8", "optimizer.momentum=0.0", "optimizer.weight_decay=0.0",
              "scheduler.T_max=1000"]
    a = launch(dtrain_cli, configs, tmp_path / "a", "data.batch_size=64", *common)
    b = launch(dtrain_cli, configs, tmp_path / "b", "data.batch_size=16",
               "trainer.grad_accum_steps=4", *common)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    wa, wb = weights(tmp_path / "a" / "version_0"), weights(tmp_path / "b" / "version_0")
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6, err_msg=k)
