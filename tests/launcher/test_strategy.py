"""`distributed.strategy` (ddp, zero1, zero2, fsdp) and `trainer.activation_checkpointing` in
real `dtrain launch` runs on 2 ranks: the losses equal the ddp run's, the checkpoints are full
state dicts, a run stopped halfway resumes exactly (issue 14)."""
import json

import numpy as np
import pytest

import dtrain as dt
from dtrain.autograd.graph import saved_nbytes
from dtrain.launcher import config as cfgmod
from dtrain.launcher import strategy
from dtrain.launcher.models import blocks, build_model
from dtrain.launcher.rundir import load_full
from dtrain.launcher.trainer import World

RUN = ["distributed.nproc_per_node=2", "trainer.progress=false", "trainer.log_every=1",
       "trainer.eval_every=100", "optimizer.name=adam", "~optimizer.momentum"]


def launch(dtrain_cli, configs, out, *overrides):
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", f"experiment.output_dir={out}",
                      *RUN, *overrides, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text()
                                   .splitlines()) if r["split"] == "train"]


def weights(run_dir):
    state = load_full(sorted(run_dir.glob("checkpoint_*"))[-1], ["model"])
    return {k: v.numpy() for k, v in state["model"].items()}


def test_each_strategy_trains_as_ddp_and_resumes(dtrain_cli, configs, tmp_path):
    launch(dtrain_cli, configs, tmp_path / "ddp", "trainer.max_steps=8")
    ref = tmp_path / "ddp" / "version_0"
    assert len(losses(ref)) == 8
    for name in ["zero1", "zero2", "fsdp"]:
        out = tmp_path / name
        keys = [f"distributed.strategy={name}"]
        launch(dtrain_cli, configs, out, *keys, "trainer.max_steps=4")
        more = launch(dtrain_cli, configs, out, *keys, "trainer.max_steps=8",
                      "trainer.resume=latest")
        assert "resumed from step 4 of 8" in more.stdout
        run = out / "version_0"
        np.testing.assert_allclose(losses(run), losses(ref), rtol=1e-6, err_msg=name)
        full, expected = weights(run), weights(ref)
        assert full.keys() == expected.keys()
        for k in full:  # the full tensors, not rank 0's shards
            np.testing.assert_allclose(full[k], expected[k], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name}: {k}")


def test_a_ddp_checkpoint_resumes_under_fsdp(dtrain_cli, configs, tmp_path):
    """The fsdp run evaluates one sample per batch: 180 forwards on rank 0, 179 and a padding
    one on rank 1 (each forward gathers parameters on both)."""
    launch(dtrain_cli, configs, tmp_path / "a", "trainer.max_steps=6")
    launch(dtrain_cli, configs, tmp_path / "b", "trainer.max_steps=3")
    more = launch(dtrain_cli, configs, tmp_path / "b", "trainer.max_steps=6",
                  "trainer.resume=latest", "distributed.strategy=fsdp", "data.eval_batch_size=1")
    assert "resumed from step 3 of 6" in more.stdout
    a, b = tmp_path / "a" / "version_0", tmp_path / "b" / "version_0"
    np.testing.assert_allclose(losses(b), losses(a), rtol=1e-6)
    tests = [[(r["loss"], r["accuracy"]) for r in map(json.loads, (run / "metrics.jsonl")
              .read_text().splitlines()) if r["split"] == "test"] for run in (a, b)]
    np.testing.assert_allclose(tests[1][-1], tests[0][-1], rtol=1e-6)  # at step 6
    assert "test loss" in more.stdout and "(359 samples)" in more.stdout


def test_zero1_clips_the_reduced_gradients_as_ddp(dtrain_cli, configs, tmp_path):
    """zero1 has no DDP: its grad norm sums the ranks' reduced partitions, so clipping and the
    logged norm equal ddp's, with gradients accumulated over 2 micro-batches."""
    runs = {}
    for name in ["ddp", "zero1"]:
        launch(dtrain_cli, configs, tmp_path / name, "trainer.max_steps=4",
               f"distributed.strategy={name}", "trainer.clip_grad_norm=0.05",
               "trainer.grad_accum_steps=2")
        records = [json.loads(line) for line in
                   (tmp_path / name / "version_0" / "metrics.jsonl").read_text().splitlines()]
        runs[name] = [(r["loss"], r["grad_norm"]) for r in records if r["split"] == "train"]
    assert len(runs["ddp"]) == 4 and all(norm > 0.05 for _, norm in runs["ddp"])
    np.testing.assert_allclose(runs["zero1"], runs["ddp"], rtol=1e-6)

BASE = """\
model:
  name: mlp
data:
  dataset: digits
optimizer:
  lr: 0.1
trainer:
  epochs: 1
  amp: true
distributed:
  strategy: {}
"""


def test_bad_strategy_names_file_line_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE.format("zero4"))
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.load_config(path)
    assert str(err.value) == f"{tmp_path}/c.yaml:11: distributed.strategy: 'zero4' must be " \
                             "one of ['ddp', 'zero1', 'zero2', 'fsdp']"
    cfg, _ = cfgmod.load_config(path, ["distributed.strategy=zero2"])  # with trainer.amp
    assert cfg.distributed.strategy == "zero2" and cfg.trainer.amp
    assert cfgmod.load_config(path, ["~distributed.strategy"])[0].distributed.strategy == "ddp"


def test_amp_under_sharded_strategies_trains_as_ddp(dtrain_cli, configs, tmp_path):
    """trainer.amp under zero1 and fsdp: a ShardedGradScaler agrees on the found-inf flag
    across ranks; the losses follow ddp's with AMP (bfloat16 on the CPU) and the scale ends
    the same."""
    runs = {}
    for name in ["ddp", "zero1", "fsdp"]:
        launch(dtrain_cli, configs, tmp_path / name, "trainer.max_steps=5", "trainer.amp=true",
               f"distributed.strategy={name}")
        run = tmp_path / name / "version_0"
        runs[name] = losses(run), load_full(sorted(run.glob("checkpoint_*"))[-1])["scaler"]
    assert len(runs["ddp"][0]) == 5
    for name in ["zero1", "fsdp"]:
        np.testing.assert_allclose(runs[name][0], runs["ddp"][0], rtol=2e-2, err_msg=name)
        assert runs[name][1] == runs["ddp"][1], name


def test_activation_checkpointing_under_each_strategy_trains_as_ddp(dtrain_cli, configs,
                                                                     tmp_path):
    launch(dtrain_cli, configs, tmp_path / "ddp", "trainer.max_steps=6")
    ref = losses(tmp_path / "ddp" / "version_0")
    for name in ["ddp", "zero1", "zero2", "fsdp"]:
        out = tmp_path / f"ac_{name}"
        launch(dtrain_cli, configs, out, "trainer.max_steps=6", f"distributed.strategy={name}",
               "trainer.activation_checkpointing=true")
        np.testing.assert_allclose(losses(out / "version_0"), ref, rtol=1e-6, err_msg=name)


LM = """\
model:
  name: transformer_lm
  args: {d_model: 32, nhead: 2, num_layers: 4, dim_feedforward: 64, dropout: 0.1}
data:
  dataset: synthetic_lm
optimizer:
  lr: 0.1
trainer:
  epochs: 1
"""


def test_activation_checkpointing_keeps_less_and_computes_the_same(tmp_path):
    """Each TransformerEncoderLayer's call is recomputed in backward: the graph keeps a
    fraction of the activations, the gradients are the same floats (dropout masks too)."""
    path = tmp_path / "lm.yaml"
    path.write_text(LM)
    saved, grads = {}, {}
    for on in (False, True):
        cfg, _ = cfgmod.load_config(path, [f"trainer.activation_checkpointing={on}"])
        dt.manual_seed(0)
        model = build_model(cfg.model, (16,), 16)
        wrapped = strategy.wrap(model, blocks(cfg.model, model), cfg,
                                World(0, 1, dt.device("cpu")))
        assert [type(b).__name__ for b in blocks(cfg.model, model)] == \
            ["CheckpointedTransformerEncoderLayer" if on else "TransformerEncoderLayer"] * 4
        out = wrapped(dt.randint(0, 16, (8, 16)))
        saved[on] = saved_nbytes(out)
        out.square().mean().backward()
        grads[on] = {n: p.grad.numpy() for n, p in model.named_parameters()}
    assert saved[True] * 4 < saved[False], saved
    for name, g in grads[False].items():
        np.testing.assert_array_equal(grads[True][name], g, err_msg=name)


def test_activation_checkpointing_needs_a_built_in_model(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(LM.replace("name: transformer_lm", "target: mypkg.models:Net") +
                    "  activation_checkpointing: true\n")
    with pytest.raises(cfgmod.ConfigError, match=r"c\.yaml:10: trainer.activation_checkpointing:"
                                                 r" needs a built-in model \(model.name\)"):
        cfgmod.load_config(path)
