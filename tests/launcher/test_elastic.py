"""Elastic jobs (`--nnodes MIN:MAX --max-restarts R`): real ranks on nodes emulated on this
machine and on the two-node test cluster lose a node and finish on the one left."""
import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from dtrain.launcher import elastic, run
from dtrain.launcher.records import Kind, RankRecord


@pytest.mark.parametrize("text, bounds", [("2", (None, 2)), ("1:2", (1, 2)), ("3:3", (3, 3))])
def test_nnodes_takes_torchrun_syntax(text, bounds):
    assert elastic.parse_nnodes(text) == bounds


@pytest.mark.parametrize("text", ["0", "0:2", "3:2", "a:b", "1:"])
def test_bad_nnodes_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
        elastic.parse_nnodes(text)


def test_bad_nnodes_is_a_usage_error(dtrain_cli, tmp_path):
    (tmp_path / "x.py").write_text("")
    proc = dtrain_cli("launch", "--nnodes", "3:2", "x.py")
    assert proc.returncode == 2
    assert "argument --nnodes: need 1 <= MIN <= MAX and N >= 1, got '3:2'" in proc.stderr


def test_nodes_are_emulated_on_one_machine(dtrain_cli, tmp_path):
    (tmp_path / "x.py").write_text("")
    dry = dtrain_cli("launch", "--nproc-per-node", "2", "--nnodes", "1:2", "--dry-run", "x.py")
    assert dry.returncode == 0, dry.stderr
    assert "export DTRAIN_EMULATED_NODES=emu0,emu1" in dry.stdout
    assert re.search(r"mpiexec -n 4 \S+ -m dtrain\.launcher\.rank x\.py", dry.stdout)


def test_a_restart_runs_on_the_nodes_left(tmp_path, monkeypatch):
    (tmp_path / "hosts").write_text("# two hosts\nnode-a:4\nnode-b\n")
    spec = run.JobSpec(["x.py"], nproc_per_node=2, nnodes=2, hostfile=str(tmp_path / "hosts"))
    assert spec.node_names() == ("node-a", "node-b")
    cmd = run.command(run.JobSpec(["x.py"], nproc_per_node=2, nodes=("node-b",),
                                  hostfile=str(tmp_path / "hosts")))
    assert cmd[1:7] == ["-n", "2", "-hosts", "node-b", "-ppn", "2"]
    local = run.JobSpec(["x.py"], nproc_per_node=2, nodes=("emu1",))
    assert run.environment(local, "id", "dir")["DTRAIN_EMULATED_NODES"] == "emu1"
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[1-2]")
    left = run.JobSpec(["x.py"], nproc_per_node=2, nodes=("node1",))
    assert run.command(left)[1:9] == ["-n", "2", "-bootstrap", "slurm", "-hosts", "node1",
                                      "-ppn", "2"]
    srun = run.command(run.JobSpec(["x.py"], nproc_per_node=2, nodes=("node1",),
                                   launcher="srun"))
    assert srun[:6] == ["srun", "--mpi=pmi2", "--nodes=1", "--nodelist=node1", "--ntasks=2",
                        "--ntasks-per-node=2"]


def _record(rank, kind, code, text=""):
    return RankRecord(rank, kind, code, text)


def test_which_node_is_lost(tmp_path, monkeypatch):
    nodes = ("node1", "node2")
    killed = _record(3, Kind.SIGNAL, 137, "killed by SIGKILL: out of memory, or ...")
    after = _record(0, Kind.SIGNAL, 137, "killed by SIGKILL: out of memory, or ...")
    assert elastic.lost_nodes([killed, after], nodes, 2, False) == {
        "node2": "rank 3 killed by SIGKILL"}
    assert elastic.lost_nodes([_record(1, Kind.EXIT, 7, "exited with code 7")], nodes, 2,
                              False) == {"node1": "rank 1 exited with code 7"}
    raised = _record(2, Kind.EXCEPTION, 1, "Traceback ...")   # a bug, not a lost node
    assert elastic.lost_nodes([raised], nodes, 2, False) == {}
    bin_dir = tmp_path / "bin"                                 # Slurm's view: node2 drained
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho 'node1 allocated'\necho 'node2 draining'\n")
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert elastic.lost_nodes([raised], nodes, 2, True) == {"node2": "Slurm reports it draining"}


KILL_NODE = """
import os
import signal
from dtrain.launcher.models import mlp

def build(hidden):
    model = mlp((1, 8, 8), 10, hidden=hidden)
    forward = model.forward
    calls = [0]

    def dying(x):       # node 1's ranks are killed at their KILL_AT-th training step
        if model.training:
            calls[0] += 1
            if calls[0] == int(os.environ["KILL_AT"]) and os.environ["NODE_RANK"] == "1":
                os.kill(os.getpid(), signal.SIGKILL)
        return forward(x)
    model.forward = dying
    return model
"""
TRAIN = ["model.name=null", "model.target=kill_node:build", "model.args={hidden: [32]}",
         "trainer.max_steps=30", "trainer.checkpoint_every=10", "trainer.log_every=5",
         "trainer.progress=false", "trainer.log_samples=true"]
DIGITS_TRAIN = 1438  # samples: 12 steps of global batch 128 an epoch


def _pythonpath(folder):
    """PYTHONPATH with `folder` (a model's module) first, keeping the one dtrain comes from."""
    return os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))


def _train_steps(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["split"] == "train"]


def assert_each_sample_once(trained_samples, run_dir):
    """Every index of each epoch trained on exactly once across the restart from step 10 on
    2 ranks (the last epoch, unfinished at step 30, without repeats)."""
    history = trained_samples.by_step(run_dir, resumed=(10, 2))
    assert sorted(history) == list(range(1, 31))
    epochs = trained_samples.by_epoch(history)
    assert sorted(epochs) == [0, 1, 2]
    for epoch in (0, 1):
        assert sorted(epochs[epoch]) == list(range(DIGITS_TRAIN)), epoch
    assert len(epochs[2]) == 6 * 128 and len(set(epochs[2])) == len(epochs[2])


def test_job_loses_a_node_and_finishes_on_the_other(dtrain_cli, configs, tmp_path,
                                                    trained_samples):
    (tmp_path / "kill_node.py").write_text(KILL_NODE)
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", *TRAIN, "--nproc-per-node", "2",
                      "--nnodes", "1:2", "--max-restarts", "1", "--rank0-only",
                      f"experiment.output_dir={tmp_path / 'runs'}", timeout=120,
                      env={"PYTHONPATH": _pythonpath(tmp_path), "KILL_AT": "15"})
    assert proc.returncode == 0, proc.stderr
    assert "world: 4 ranks on nodes ['emu0', 'emu1']" in proc.stdout
    assert re.search(r"dtrain launch: node emu1 lost \(rank [23] killed by SIGKILL\); restarting"
                     r" on 2 ranks \(was 4\), resuming from step 10 \(restart 1 of 1\)",
                     proc.stderr), proc.stderr
    second = proc.stdout.split("world: 2 ranks on nodes ['emu0']")[1]
    assert "resumed from step 10 of 30" in second
    assert "summary: completed; 30/30 steps" in second
    run_dir = tmp_path / "runs" / "version_0"
    steps = _train_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == 30
    assert (run_dir / "checkpoint_000000030").exists()
    assert_each_sample_once(trained_samples, run_dir)


FAULTY = """
import os, signal, time
from pathlib import Path
import dtrain as dt
import dtrain.distributed as dist
dist.init_process_group()
print("world", dist.get_world_size(), flush=True)
marker = Path(os.environ["MARKER"])
for step in range(20):
    dist.all_reduce(dt.ones(4))
    if step == 3 and dist.get_rank() == 1 and not marker.exists():
        marker.write_text("failed once")
        if os.environ["MODE"] == "raise":
            raise RuntimeError("a bug at step 3")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.02)
"""


def test_a_raising_rank_restarts_on_the_same_nodes(dtrain_cli, tmp_path):
    (tmp_path / "faulty.py").write_text(FAULTY)
    proc = dtrain_cli("launch", "--nnodes", "1:2", "--max-restarts", "1", "faulty.py",
                      env={"MODE": "raise", "MARKER": str(tmp_path / "m")},
                      timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ("dtrain launch: no node lost (rank 1 raised an exception); restarting on 2 ranks "
            "(was 2) (restart 1 of 1)") in proc.stderr
    assert proc.stdout.count("[rank 0] world 2") == 2


def test_fewer_than_min_nodes_is_a_final_error(dtrain_cli, tmp_path):
    (tmp_path / "faulty.py").write_text(FAULTY)
    proc = dtrain_cli("launch", "--nnodes", "2:2", "--max-restarts", "3", "faulty.py",
                      env={"MODE": "kill", "MARKER": str(tmp_path / "m")},
                      timeout=60)
    assert proc.returncode == 1
    assert ("dtrain launch: job failed for good: node(s) emu1 (rank 1 killed by SIGKILL) lost;"
            " 1 node(s) left (emu0), fewer than --nnodes MIN=2") in proc.stderr
    assert proc.stdout.count("[rank 0] world 2") == 1 and "restarting" not in proc.stderr


def test_slurm_job_continues_on_the_node_left(dtrain_cli, configs, tmp_path, slurm,
                                             trained_samples):
    (tmp_path / "kill_node.py").write_text(KILL_NODE)
    out_dir = tmp_path / "run"
    proc = dtrain_cli("slurm", configs / "digits_mlp.yaml", *TRAIN, "slurm.nodes=2",
                      "slurm.ntasks_per_node=2", "slurm.time=00:05:00",
                      f"experiment.output_dir={out_dir}", "--nnodes", "1:2", "--max-restarts",
                      "1", env={"PYTHONPATH": _pythonpath(tmp_path), "KILL_AT": "15"})
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"submitted job (\d+)", proc.stdout).group(1)
    script = next(out_dir.glob("submit-*/job.sbatch")).read_text()
    assert "#SBATCH --no-kill" in script and " --nnodes=1:2 --max-restarts=1" in script
    state, code = slurm.wait(job, timeout=120)
    log = (out_dir / f"slurm-{job}.out").read_text()
    assert (state, code) == ("COMPLETED", "0:0"), log
    line = re.search(r"dtrain launch: node node2 lost \(rank [23] killed by SIGKILL\); "
                     r"restarting on 2 ranks \(was 4\), resuming from step 10 \(restart 1 of "
                     r"1\)\n", log)
    assert line, log
    first, second = log.split(line.group(0))
    assert "world: 4 ranks on nodes ['node1', 'node2']" in first
    assert "world: 2 ranks on nodes ['node1']" in second
    assert "resumed from step 10 of 30" in second and "summary: completed; 30/30" in second
    steps = _train_steps(out_dir / f"slurm-{job}")
    assert steps == sorted(set(steps)) and steps[-1] == 30
    assert_each_sample_once(trained_samples, out_dir / f"slurm-{job}")


def test_an_allocation_smaller_than_min_is_refused(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node1")
    out = io.StringIO()
    spec = run.JobSpec(["x.py"], nnodes=3, min_nnodes=2)
    assert run.launch(spec, max_restarts=1, out=out) == 2
    assert out.getvalue() == ("dtrain launch: only 1 node(s) to start on (node1), fewer than "
                              "--nnodes MIN=2\n")


DRAINS_NODE2 = """
import os, subprocess, sys, time
from pathlib import Path
import dtrain as dt
import dtrain.distributed as dist
dist.init_process_group()
print("world", dist.get_world_size(), "on", os.environ["SLURMD_NODENAME"], flush=True)
marker = Path(sys.argv[1])
for step in range(10):
    dist.all_reduce(dt.ones(4))
    if step == 3 and dist.get_rank() == 0 and not marker.exists():
        marker.write_text("drained node2")
        subprocess.run(["scontrol", "update", "nodename=node2", "state=drain",
                        "reason=dtrain test_elastic"], check=True)
        raise RuntimeError("a bug while node2 drains")
    time.sleep(0.02)
"""


def test_a_node_slurm_drains_is_left_out_of_the_restart(slurm, tmp_path):
    (tmp_path / "drains.py").write_text(DRAINS_NODE2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMP_")}  # see dtrain_cli
    try:
        proc = subprocess.run(
            ["salloc", "-N", "2", "--ntasks-per-node=2", "--no-kill", "-t", "00:03:00",
             sys.executable, "-m", "dtrain.launcher", "launch", "--nnodes", "1:2",
             "--nproc-per-node", "2", "--max-restarts", "1", "drains.py", str(tmp_path / "m")],
            capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    finally:
        subprocess.run(["scontrol", "update", "nodename=node2", "state=resume"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RuntimeError: a bug while node2 drains" in proc.stderr
    assert ("dtrain launch: node node2 lost (Slurm reports it draining); restarting on 2 ranks "
            "(was 4) (restart 1 of 1)") in proc.stderr
    first = sorted(line for line in proc.stdout.splitlines() if " world 4 " in line)
    second = sorted(line for line in proc.stdout.splitlines() if " world 2 " in line)
    assert first == [f"[rank {r}] world 4 on node{1 + r // 2}" for r in range(4)]
    assert second == [f"[rank {r}] world 2 on node1" for r in range(2)]


def test_a_stop_signal_still_ends_an_elastic_job_for_good(tmp_path):
    script = tmp_path / "sleepy.py"
    script.write_text("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "dtrain.launcher", "launch", "--nnodes", "1:2",
                             "--max-restarts", "3", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    up = [proc.stdout.readline() for _ in range(2)]        # both ranks are running
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert sorted(up) == ["[rank 0] up\n", "[rank 1] up\n"]
    assert proc.returncode == 143 and "stopped by SIGTERM; every rank was stopped" in err
    assert "restarting" not in err and "up" not in out
