"""Resuming a run on another world size (issue 15): real `dtrain launch` runs of a float64 MLP
with Adam and a learning rate halved each epoch on 50 synthetic samples, global batch 12 (5
steps an epoch, the last of 2 samples: ranks 2 and 3 of a 3- or 4-rank run get none and pad).
Checkpoints at steps 3 (mid-epoch 0), 5 (the end of epoch 0) and 6 (mid-epoch 1) are resumed
on other world sizes, under ddp and fsdp, chained: 1 -> 4 -> 2, 2 -> 3 -> 1, and 2 -> 2;
each run goes to step 8. Every step trains on the same
12 samples as the uninterrupted 1-rank run, every index is seen exactly once in epoch 0
across the interruptions, the weights equal that run's to 1e-10, and 2 -> 2 equals the
uninterrupted 2-rank run bit for bit."""
import os

import numpy as np
import pytest

import dtrain as dt
from dtrain.launcher import config as cfgmod
from dtrain.launcher import trainer
from dtrain.launcher.rundir import load_full
from dtrain.launcher.trainer import World, rng_seed, split_global_batch

MODEL = """
import dtrain as dt
from dtrain import nn
from dtrain.launcher.models import mlp


class Float64(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp((4,), 3, hidden=(8,)).double()

    def forward(self, x):
        return self.net(x.to(dt.float64))


def build():
    return Float64()
"""

CONFIG = """\
experiment: {name: reshard, seed: 3}
model: {target: "f64model:build"}
data: {dataset: synthetic, args: {num_samples: 50, shape: [4], num_classes: 3}}
optimizer: {name: adam, lr: 0.01}
scheduler: {name: step, step_size: 1, gamma: 0.5}
trainer: {max_steps: 8, checkpoint_every: 3, keep_last: 10, eval_every: 100, log_every: 1,
          progress: false, log_samples: true}
"""


@pytest.fixture
def launch(dtrain_cli, tmp_path):
    (tmp_path / "f64model.py").write_text(MODEL)
    (tmp_path / "c.yaml").write_text(CONFIG)

    def run(name, nproc, batch, strategy="ddp", resume=None, every=3):
        out = tmp_path / name
        args = [f"experiment.output_dir={out}", f"distributed.nproc_per_node={nproc}",
                f"data.batch_size={batch}", f"distributed.strategy={strategy}",
                f"trainer.checkpoint_every={every}"]
        if resume is not None:
            args.append(f"trainer.resume={resume}")
        path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
        proc = dtrain_cli("launch", "c.yaml", *args, env={"PYTHONPATH": path}, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return out / "version_0", proc.stdout
    return run


def checkpoint(run, step):
    return run / f"checkpoint_{step:09d}"


def weights(run):
    return {k: v.numpy() for k, v in load_full(checkpoint(run, 8), ["model"])["model"].items()}


def test_resume_on_other_world_sizes_continues_the_same_samples_and_weights(launch,
                                                                           trained_samples):
    def steps(run):
        """{step: the sorted indices all ranks trained on}."""
        return {s: v for s, (_, v) in trained_samples.by_step(run).items()}

    one, _ = launch("one", 1, 12)
    two, _ = launch("two", 2, 6, every=5)
    runs = {}
    runs["1-4"], log14 = launch("r14", 4, 12, "fsdp", checkpoint(one, 3))
    runs["2-3"], log23 = launch("r23", 3, 6, "fsdp", checkpoint(two, 5))
    runs["2-2"], log22 = launch("r22", 2, 6, "ddp", checkpoint(two, 5))
    runs["4-2"], log42 = launch("r42", 2, 12, "ddp", checkpoint(runs["1-4"], 6))  # fsdp's
    runs["3-1"], log31 = launch("r31", 1, 6, "ddp", checkpoint(runs["2-3"], 6))
    assert "resume: world size 1 -> 4: per-rank batch 12 -> 3 (global 12 kept)" in log14
    assert "resume: world size 2 -> 3: per-rank batch 6 -> 4 (global 12 kept)" in log23
    assert "resume: world size 4 -> 2: per-rank batch 3 -> 6 (global 12 kept)" in log42
    assert "resume: world size 3 -> 1: per-rank batch 4 -> 6, gradient accumulation 1 -> 2 " \
           "(global 12 kept)" in log31
    assert "resume: each rank's RNG streams derived from (seed 3, step 5, rank)" in log23
    assert "resume:" not in log22 and "resumed from step 5 of 8" in log22

    reference = steps(one)
    assert len(reference) == 8 and [len(reference[s]) for s in range(1, 9)] == \
        [12, 12, 12, 12, 2, 12, 12, 12]
    assert sorted(i for s in range(1, 6) for i in reference[s]) == list(range(50))
    parents = {"1-4": (one, 3), "2-3": (two, 5), "2-2": (two, 5), "4-2": (runs["1-4"], 6),
               "3-1": (runs["2-3"], 6)}
    for name, run in runs.items():
        history, (parent, at) = steps(run), parents[name]
        while True:  # the steps up to the resume come from the run it resumed
            history.update({s: v for s, v in steps(parent).items() if s <= at})
            if parent not in runs.values():
                break
            parent, at = parents[next(k for k, v in runs.items() if v == parent)]
        assert history == reference, name  # the same samples in every step
        epoch0 = [i for s in range(1, 6) for i in history[s]]
        assert sorted(epoch0) == list(range(50)), name  # each exactly once
        expected = weights(one)
        for k, v in weights(run).items():
            np.testing.assert_allclose(v, expected[k], rtol=0, atol=1e-10,
                                       err_msg=f"{name}: {k}")
    for k, v in weights(runs["2-2"]).items():
        np.testing.assert_array_equal(v, weights(two)[k], err_msg=k)


@pytest.mark.parametrize("target, world, batch, accum, expected", [
    (32, 2, 8, 1, (8, 2)),    # shrink: the per-rank batch (memory) kept, accumulation x2
    (12, 3, 6, 1, (4, 1)),    # grow: the per-rank batch shrinks
    (12, 1, 6, 1, (6, 2)),
    (24, 3, 4, 2, (4, 2)),    # 24 = 3 * 4 * 2: nothing to change
    (32, 3, 8, 1, (11, 1)),   # 32 does not split over 3 ranks: 33, the nearest above
])
def test_split_global_batch(target, world, batch, accum, expected):
    assert split_global_batch(target, world, batch, accum) == expected


def test_rng_seed_is_a_function_of_seed_step_and_rank():
    seeds = {rng_seed(s, t, r) for s in (0, 1) for t in (3, 6) for r in range(4)}
    assert len(seeds) == 16 and rng_seed(0, 3, 1) == rng_seed(0, 3, 1)


def test_per_rank_batch_kept_on_request(tmp_path):
    """trainer.elastic_batch=per_rank: a 4-rank checkpoint (global batch 24, one step done)
    resumed on 1 rank keeps data.batch_size; the epoch goes on from sample 24 in steps of
    6, and an epochs-long run's total follows (1 + 5 + 9 steps)."""
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace('target: "f64model:build"', "name: mlp"))
    cfg, _ = cfgmod.load_config(path, ["data.batch_size=6", "~trainer.max_steps",
                                       "+trainer.epochs=2", "trainer.elastic_batch=per_rank"])
    job = trainer.build(cfg, World(0, 1, dt.device("cpu")), tmp_path)
    state = trainer.state_of(job)
    state["step"], state["rng"] = 1, state["rng"] * 4
    state["data"].update(world_size=4, global_batch=24, start=24)
    logs = []
    trainer.resume(job, state, logs.append)
    assert logs == ["resume: world size 4 -> 1: per-rank batch 6 kept (trainer.elastic_batch="
                    "per_rank): global batch 24 -> 6",
                    "resume: each rank's RNG streams derived from (seed 3, step 1, rank)"]
    assert (job.global_batch, job.steps_per_epoch, job.total) == (6, 9, 15)
    derived = dt.randn(3, generator=dt.Generator().manual_seed(rng_seed(3, 1, 0)))
    np.testing.assert_array_equal(dt.randn(3).numpy(), derived.numpy())
    state["data"].update(world_size=1, global_batch=6)  # the same world: its own state back
    state["rng"] = [dt.get_rng_state()]
    expected = dt.randn(3).numpy()
    trainer.resume(job, state, logs.append)
    np.testing.assert_array_equal(dt.randn(3).numpy(), expected)
    assert [count for _, count in trainer.epoch_steps(job)] == [6, 6, 6, 6, 2]
    with pytest.raises(cfgmod.ConfigError, match="trainer.elastic_batch: 'all' must be one of "
                                                 r"\['global', 'per_rank'\]"):
        cfgmod.load_config(path, ["trainer.elastic_batch=all"])
