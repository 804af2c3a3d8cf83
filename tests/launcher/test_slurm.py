"""`dtrain slurm`: the generated sbatch script, and real jobs on the two-node test cluster
(the `slurm` fixture, conftest.py); skipped where Slurm is absent."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from dtrain.launcher import metrics


def test_sbatch_script_from_the_config(dtrain_cli, configs):
    proc = dtrain_cli("slurm", configs / "cifar10_resnet20.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for line in ["#SBATCH --job-name=cifar10_resnet20", "#SBATCH --nodes=1",
                 "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=02:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=B:USR2@300", "#SBATCH --requeue",
                 "#SBATCH --exclusive", "#SBATCH --open-mode=append",
                 "export DTRAIN_RUN_ID=slurm-$SLURM_JOB_ID"]:
        assert line in text.splitlines(), line
    assert re.search(r"^#SBATCH --output=/\S+/runs/cifar10_resnet20/slurm-%j\.out$", text, re.M)
    assert re.search(r"-m dtrain\.launcher launch \S+/runs/cifar10_resnet20/submit-\d{8}-\d{6}/"
                     r"config\.yaml distributed\.nproc_per_node=4 distributed\.nnodes=1", text)


STUB_SBATCH = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
echo "4242;ci"
"""


def test_each_submission_gets_its_own_folder(dtrain_cli, configs, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(STUB_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = tmp_path / "out"
    for lr in ("0.05", "0.2"):                      # two submissions, most likely in one second
        proc = dtrain_cli("slurm", configs / "digits_mlp.yaml", f"experiment.output_dir={out}",
                          f"optimizer.lr={lr}", env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"submitted job 4242 ({out}/submit-" in proc.stdout
        assert f"logs: {out}/slurm-4242.out; run directory: {out}/slurm-4242" in proc.stdout
    folders = sorted(out.iterdir())
    assert len(folders) == 2 and not (out / "config.yaml").exists()
    assert all(re.fullmatch(r"submit-\d{8}-\d{6}(-2)?", f.name) for f in folders), folders
    calls = (bin_dir / "calls").read_text().splitlines()
    for folder, lr, call in zip(folders, (0.05, 0.2), calls):
        assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "job.sbatch"]
        assert yaml.safe_load((folder / "config.yaml").read_text())["optimizer"]["lr"] == lr
        assert f" launch {folder}/config.yaml " in (folder / "job.sbatch").read_text()
        assert call == f"--parsable {folder}/job.sbatch"


def test_launch_command_inside_an_allocation(dtrain_cli, configs):
    env = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "gpu[08-10]"}
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", "distributed.nproc_per_node=2",
                      "distributed.nnodes=2", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "mpiexec -n 4 -bootstrap slurm -hosts gpu08,gpu09 -ppn 2 " in proc.stdout
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", "distributed.nproc_per_node=2",
                      "distributed.nnodes=2", "distributed.launcher=srun", "--dry-run", env=env)
    assert "srun --mpi=pmi2 --ntasks=4 --ntasks-per-node=2 --kill-on-bad-exit=1 " in proc.stdout


def _submit(dtrain_cli, configs, out_dir, *overrides, env=None):
    """Submit digits_mlp on the two nodes; returns the job id (its run directory is
    out_dir/slurm-<id>, its log out_dir/slurm-<id>.out)."""
    proc = dtrain_cli("slurm", configs / "digits_mlp.yaml", "slurm.nodes=2",
                      "slurm.ntasks_per_node=1", "slurm.time=00:05:00",
                      f"experiment.output_dir={out_dir}", *overrides, env=env)
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"submitted job (\d+)", proc.stdout).group(1)
    assert f"logs: {out_dir}/slurm-{job}.out" in proc.stdout
    return job


def test_slurm_job_runs_one_mpi_world_over_two_nodes(dtrain_cli, configs, tmp_path, slurm):
    out_dir = tmp_path / "run"
    job = _submit(dtrain_cli, configs, out_dir)
    state, code = slurm.wait(job)
    log = (out_dir / f"slurm-{job}.out").read_text()
    assert (state, code) == ("COMPLETED", "0:0"), log
    assert "world: 2 ranks on nodes ['node1', 'node2']" in log
    records = metrics.read(out_dir / f"slurm-{job}")
    assert [r for r in records if r["split"] == "test"][-1]["accuracy"] >= 0.95


def test_failing_slurm_job_reports_its_failure(dtrain_cli, configs, tmp_path, slurm):
    (tmp_path / "broken.py").write_text("def build():\n    raise ValueError('no such model')\n")
    out_dir = tmp_path / "run"
    job = _submit(dtrain_cli, configs, out_dir, "model.name=null", "model.target=broken:build",
                  "model.args={}", env={"PYTHONPATH": str(tmp_path)})
    state, code = slurm.wait(job)
    log = (out_dir / f"slurm-{job}.out").read_text()
    assert state == "FAILED" and code != "0:0", log
    assert "Root cause: rank" in log and "ValueError: no such model" in log


def _nodes_idle():
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True)
    return set(out.stdout.split()) == {"idle"}


def _start_requeued_now(job, show, timeout=150):
    """Slurm holds a requeued job for ~2 min (EligibleTime); make it eligible at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = show(job)
        if "Restarts=1" in out and "JobState=PENDING" in out and _nodes_idle():
            # the first run's job credential must be gone first, or slurmctld kills the new
            # start ("Job credential revoked", seen here when it was started at once)
            time.sleep(2)
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            return
        assert "JobState=COMPLETED" not in out, "the job completed without being requeued"
        time.sleep(0.5)
    raise AssertionError(f"job {job} was not requeued in {timeout} s")


# NOTE: under srun, the requeued run's ranks failed MPI_Init in 4 of the 5 fresh-clone CI
# runs of stop 22 (the last passed): slurmstepd logged a garbled PMI2 request (MPICH's CVAR
# help text, 12 bytes: "de will be d"), then UCX asserted on an address version. The same
# test passes alone, with tests/launcher, and in the full suite of a checkout whose venv
# also holds torch; a plain `srun` of mpi4py in a requeued job passes too. The cause is not
# found yet.
SRUN_REQUEUE = pytest.mark.xfail(reason="requeued srun run: MPI_Init fails on a garbled PMI2 "
                                        "request in fresh-clone CI runs (see NOTE)",
                                 strict=False)


@pytest.mark.parametrize("launcher", ["mpiexec", pytest.param("srun", marks=SRUN_REQUEUE)])
def test_preempted_job_requeues_and_continues_its_run(dtrain_cli, configs, tmp_path, launcher,
                                                     slurm):
    out_dir = tmp_path / "run"
    # signal_before_s=10: no time-limit USR2 of Slurm's own within this test
    job = _submit(dtrain_cli, configs, out_dir, "trainer.epochs=60",
                  "trainer.checkpoint_every=1000000", "slurm.requeue=true",
                  "slurm.signal_before_s=10", f"distributed.launcher={launcher}")
    run_dir = out_dir / f"slurm-{job}"
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    # what --signal=B:USR2@T does before the time limit: USR2 to the batch shell, that is
    # to `dtrain launch` (exec'd by it)
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)
    _start_requeued_now(job, slurm.show)
    state, code = slurm.wait(job)
    log = (out_dir / f"slurm-{job}.out").read_text()       # both runs: --open-mode=append
    assert (state, code) == ("COMPLETED", "0:0"), log
    assert "Restarts=1" in slurm.show(job), log
    first, second = log.split(f"run directory {run_dir} (continuing it)")
    step = int(re.search(r"resumed from step (\d+) of 1380", second).group(1))
    # the ranks' stop request: SIGTERM through mpiexec, SIGUSR2 through srun
    assert re.search(rf"(stopped by SIGTERM|preempted) at step {step}: checkpoint written",
                     first), log
    assert f"dtrain launch: preempted: Slurm job {job} requeued" in first, log
    records = metrics.read(run_dir)
    train = [r["step"] for r in records if r["split"] == "train"]
    assert train == sorted(set(train)) and train[-1] == 1380     # no step written twice
    assert [r for r in records if r["split"] == "test"][-1]["accuracy"] >= 0.95
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir() and p.name != "latest") == \
        [f"slurm-{job}", next(out_dir.glob("submit-*")).name]


def test_doctor_inside_an_allocation_runs_a_rank_on_each_node(tmp_path, slurm):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMP_")}  # see dtrain_cli
    proc = subprocess.run(["salloc", "-N", "2", "--ntasks-per-node=1", "-t", "00:03:00",
                           sys.executable, "-m", "dtrain.launcher", "doctor", "--json"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    slurm = checks["slurm"]
    assert slurm["status"] == "ok", slurm
    assert re.fullmatch(r"job \d+ on 2 node\(s\): node1, node2; one rank per node all-reduced",
                        slurm["detail"])
    assert slurm["data"] == {"nodes": ["node1", "node2"], "ranks_on": ["node1", "node2"]}
    assert checks["allreduce"]["status"] in ("ok", "warn")
