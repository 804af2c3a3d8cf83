"""`dtrain launch` end to end with real processes: training, scripts, faults, restarts."""
import json
import os
import subprocess
import time

import numpy as np
import pytest

from dtrain.launcher.rundir import Checkpoints, load_full


def final_accuracy(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "test"][-1]["accuracy"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_digits_mlp_reaches_95_percent(dtrain_cli, configs, tmp_path, nproc):
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml",
                      f"experiment.output_dir={tmp_path / 'runs'}",
                      f"distributed.nproc_per_node={nproc}", "--rank0-only", timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "version_0"
    assert f"run directory {run_dir} (a new run)" in proc.stdout
    assert (tmp_path / "runs" / "latest").resolve() == run_dir
    assert final_accuracy(run_dir) >= 0.95
    assert "[rank 0]" in proc.stdout and "[rank 1]" not in proc.stdout
    assert (f"world: {nproc} ranks" in proc.stdout) == (nproc > 1)
    assert (run_dir / "config.yaml").exists() and (run_dir / "metrics.csv").exists()
    assert len(list(run_dir.glob("checkpoint_*"))) == 2     # keep_last: 2
    plot = dtrain_cli("plot", run_dir)
    assert plot.returncode == 0 and (run_dir / "curves.png").stat().st_size > 10_000


SCRIPT = """
import os, sys
import dtrain as dt
from dtrain.launcher.rundir import Checkpoints, load_full
import dtrain.distributed as dist
dist.init_process_group()
t = dt.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print("ENV", os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"],
      os.environ["LOCAL_WORLD_SIZE"], os.environ["NODE_RANK"], os.environ["DTRAIN_RUN_ID"] != "",
      t.item(), sys.argv[1:])
"""


def test_user_script_on_two_ranks(dtrain_cli, tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    proc = dtrain_cli("launch", "--nproc-per-node", "2", "train.py", "--lr", "0.1")
    assert proc.returncode == 0, proc.stderr
    for r in (0, 1):
        assert f"[rank {r}] ENV {r} 2 {r} 2 0 True 3.0 ['--lr', '0.1']" in proc.stdout
    dry = dtrain_cli("launch", "--nproc-per-node", "2", "--dry-run", "train.py", "--lr", "1")
    assert dry.returncode == 0
    assert "mpiexec -n 2" in dry.stdout and "-m dtrain.launcher.rank train.py --lr 1" in dry.stdout
    assert "export PYTHONUNBUFFERED=1" in dry.stdout
    (tmp_path / "hosts").write_text("node-a\nnode-b\n")
    multi = dtrain_cli("launch", "--nproc-per-node", "4", "--nnodes", "2", "--hostfile", "hosts",
                       "--dry-run", "train.py")
    assert "mpiexec -n 8 -f hosts -ppn 4 " in multi.stdout
    for verb in ("launch", "config", "slurm", "plot"):
        helped = dtrain_cli(verb, "--help")
        assert helped.returncode == 0 and "examples:" in helped.stdout, verb


FAULTY = """
import os, signal, time
import dtrain as dt
from dtrain.launcher.rundir import Checkpoints, load_full
import dtrain.distributed as dist
dist.init_process_group()
rank = dist.get_rank()
for step in range(100):
    dist.all_reduce(dt.ones(4))
    if rank == 1 and step == 3:
        if os.environ["MODE"] == "raise":
            raise RuntimeError("exploded at step 3")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
"""


def _leftover(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return out.split()


@pytest.mark.parametrize("mode, expected", [
    ("raise", ["Root cause: rank 1", "raised an exception:", 'RuntimeError: exploded at step 3']),
    ("kill", ["Root cause: rank 1", "killed by SIGKILL: out of memory"]),
])
def test_failing_rank_stops_the_job_with_a_root_cause_report(dtrain_cli, tmp_path, mode,
                                                             expected):
    script = tmp_path / f"faulty_{mode}.py"
    script.write_text(FAULTY)
    # the other ranks would wait in all_reduce for rank 1 forever: the timeout bounds the stop
    proc = dtrain_cli("launch", "--nproc-per-node", "3", script, env={"MODE": mode}, timeout=15)
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert not _leftover(str(script))


CRASHY_MODEL = """
import os
from pathlib import Path
from dtrain.launcher.models import mlp

class Crashy:
    calls = 0

def build(hidden):
    model = mlp((1, 8, 8), 10, hidden=hidden)
    forward = model.forward
    marker = Path(os.environ["CRASH_MARKER"])

    def crashing(x):
        Crashy.calls += 1
        if model.training and Crashy.calls == 70 and not marker.exists():
            marker.write_text("crashed once")
            raise RuntimeError("injected failure at step 70")
        return forward(x)
    model.forward = crashing
    return model
"""


def _weights(run_dir):
    newest = sorted(run_dir.glob("*/checkpoint_*"))[-1]
    return {k: v.numpy() for k, v in load_full(newest, ["model"])["model"].items()}


def test_max_restarts_resumes_to_the_same_weights(dtrain_cli, configs, tmp_path):
    (tmp_path / "crashy.py").write_text(CRASHY_MODEL)
    common = ["model.name=null", "model.target=crashy:build", "model.args={hidden: [32]}",
              "trainer.epochs=2", "trainer.checkpoint_every=25", "trainer.keep_last=10"]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path),
                                                      os.environ.get("PYTHONPATH")])),
           "CRASH_MARKER": str(tmp_path / "marker")}
    (tmp_path / "marker").write_text("do not crash")
    plain = dtrain_cli("launch", configs / "digits_mlp.yaml", *common,
                       f"experiment.output_dir={tmp_path / 'plain'}", env=env, timeout=300)
    assert plain.returncode == 0, plain.stderr
    (tmp_path / "marker").unlink()
    crashed = dtrain_cli("launch", configs / "digits_mlp.yaml", *common, "--max-restarts", "1",
                         f"experiment.output_dir={tmp_path / 'crashed'}", env=env, timeout=300)
    assert crashed.returncode == 0, crashed.stderr
    assert "injected failure at step 70" in crashed.stderr
    assert "restarting the job (restart 1 of 1)" in crashed.stderr
    assert "resumed from step 50" in crashed.stdout
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "crashed")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert os.path.exists(tmp_path / "marker")


DIES_MID_SAVE = """
import os
import signal
from pathlib import Path
from dtrain.distributed.checkpoint import storage
from dtrain.launcher.models import mlp

write_file = storage.write_file


def dying(directory, name, pieces):  # rank 1 dies as it writes its shards of step 20, once
    marker = Path(os.environ["CRASH_MARKER"])
    if directory.endswith("checkpoint_000000020") and os.environ["RANK"] == "1" and \
            not marker.exists():
        marker.write_text("died mid-save")
        os.kill(os.getpid(), signal.SIGKILL)
    return write_file(directory, name, pieces)


storage.write_file = dying


def build(hidden):
    return mlp((1, 8, 8), 10, hidden=hidden)
"""


def test_a_rank_killed_mid_save_leaves_the_previous_checkpoint_newest(dtrain_cli, configs,
                                                                      tmp_path):
    (tmp_path / "dies.py").write_text(DIES_MID_SAVE)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path),
                                                      os.environ.get("PYTHONPATH")])),
           "CRASH_MARKER": str(tmp_path / "marker")}
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", "model.name=null",
                      "model.target=dies:build", "model.args={hidden: [32]}",
                      "trainer.max_steps=30", "trainer.checkpoint_every=10",
                      "trainer.keep_last=5", "trainer.progress=false", "--nproc-per-node", "1",
                      "--nnodes", "1:2",
                      "--max-restarts", "1", f"experiment.output_dir={tmp_path / 'runs'}",
                      env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    # the launcher and the trainer agree: step 20's folder is not complete
    assert "node emu1 lost (rank 1 killed by SIGKILL); restarting on 1 rank (was 2), resuming" \
           " from step 10" in proc.stderr, proc.stderr
    assert "resumed from step 10 of 30" in proc.stdout
    run_dir = tmp_path / "runs" / "version_0"
    assert [e["step"] for e in Checkpoints(run_dir).entries()] == [10, 20, 30]  # 20 redone


def test_ctrl_c_stops_every_rank(tmp_path):
    import signal
    import sys
    script = tmp_path / "sleepy.py"
    script.write_text("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "dtrain.launcher", "launch",
                             "--nproc-per-node", "2", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while len(_leftover(str(script))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted; every rank was stopped" in err
    assert not _leftover(str(script))


def test_preemption_signal_checkpoints_then_resume_continues(dtrain_cli, configs, tmp_path):
    import signal
    import sys
    out_dir = tmp_path / "runs"
    run_dir = out_dir / "version_0"
    args = [sys.executable, "-m", "dtrain.launcher", "launch", str(configs / "digits_mlp.yaml"),
            f"experiment.output_dir={out_dir}", "trainer.epochs=200",
            "trainer.checkpoint_every=1000000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # to the rank processes (not mpiexec), as Slurm's --signal=USR2@T does to job steps
    # this job's ranks only (another job on the machine must not get the signal)
    for pid in _leftover(rf"^\S*python\S* -m dtrain\.launcher\.rank trainer {run_dir}/"):
        os.kill(int(pid), signal.SIGUSR2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    step = int(out.split("preempted at step ")[1].split(":")[0])
    assert (run_dir / f"checkpoint_{step:09d}").exists()
    again = dtrain_cli("launch", configs / "digits_mlp.yaml", f"experiment.output_dir={out_dir}",
                       "trainer.epochs=200", f"trainer.max_steps={step + 5}",
                       "trainer.resume=latest", timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"resumed from step {step} of {step + 5}" in again.stdout
