"""`dtrain slurm`: the generated sbatch script, and real jobs on the two-node test cluster
(../shared/slurm/local-cluster.sh, started by .ci/run); skipped where Slurm is absent."""
import json
import re
import shutil
import subprocess
import time

import pytest


def test_sbatch_script_from_the_config(dtrain_cli, configs):
    proc = dtrain_cli("slurm", configs / "cifar10_resnet20.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for line in ["#SBATCH --job-name=cifar10_resnet20", "#SBATCH --nodes=1",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=02:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@300", "#SBATCH --requeue",
                 "#SBATCH --exclusive"]:
        assert line in text.splitlines(), line
    assert re.search(r"-m dtrain\.launcher launch \S+/runs/cifar10_resnet20/config\.yaml "
                     r"distributed\.nproc_per_node=4 distributed\.nnodes=1", text)


def test_launch_command_inside_an_allocation(dtrain_cli, configs):
    env = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "gpu[08-10]"}
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", "distributed.nproc_per_node=2",
                      "distributed.nnodes=2", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "mpiexec -n 4 -bootstrap slurm -hosts gpu08,gpu09 -ppn 2 " in proc.stdout
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", "distributed.nproc_per_node=2",
                      "distributed.nnodes=2", "distributed.launcher=srun", "--dry-run", env=env)
    assert "srun --mpi=pmi2 --ntasks=4 --ntasks-per-node=2 --kill-on-bad-exit=1 " in proc.stdout


def _cluster_up():
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                         timeout=20)
    return out.returncode == 0 and out.stdout.count("idle") + out.stdout.count("mix") >= 2


slurm_cluster = pytest.mark.skipif(not _cluster_up(), reason="no Slurm cluster with 2 idle nodes"
                                   " (start ../shared/slurm/local-cluster.sh as root)")


def _wait(job, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                             text=True).stdout
        state = re.search(r"JobState=(\w+)", out).group(1)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state, re.search(r"ExitCode=(\S+)", out).group(1)
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} did not finish in {timeout} s")


def _submit(dtrain_cli, configs, run_dir, *overrides, env=None):
    proc = dtrain_cli("slurm", configs / "digits_mlp.yaml", "slurm.nodes=2",
                      "slurm.ntasks_per_node=1", "slurm.time=00:05:00",
                      f"experiment.output_dir={run_dir}", *overrides, env=env)
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"submitted job (\d+)", proc.stdout).group(1)
    assert f"logs: {run_dir}/slurm-{job}.out" in proc.stdout
    return job


@slurm_cluster
def test_slurm_job_runs_one_mpi_world_over_two_nodes(dtrain_cli, configs, tmp_path):
    run_dir = tmp_path / "run"
    job = _submit(dtrain_cli, configs, run_dir)
    state, code = _wait(job)
    log = (run_dir / f"slurm-{job}.out").read_text()
    assert (state, code) == ("COMPLETED", "0:0"), log
    assert "world: 2 ranks on nodes ['node1', 'node2']" in log
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["split"] == "test"][-1]["accuracy"] >= 0.95


@slurm_cluster
def test_failing_slurm_job_reports_its_failure(dtrain_cli, configs, tmp_path):
    (tmp_path / "broken.py").write_text("def build():\n    raise ValueError('no such model')\n")
    run_dir = tmp_path / "run"
    job = _submit(dtrain_cli, configs, run_dir, "model.name=null", "model.target=broken:build",
                  "model.args={}", env={"PYTHONPATH": str(tmp_path)})
    state, code = _wait(job)
    log = (run_dir / f"slurm-{job}.out").read_text()
    assert state == "FAILED" and code != "0:0", log
    assert "Root cause: rank" in log and "ValueError: no such model" in log
