"""`slurm` fixture: the two-node test cluster (../shared/slurm/local-cluster.sh, started by
.ci/run), or a skip where it is absent; `trained_samples`: what a run's ranks trained on."""
import json
import re
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest


def _cluster_up():
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                         timeout=20)
    return out.returncode == 0 and out.stdout.count("idle") + out.stdout.count("mix") >= 2


def show(job):
    """`scontrol show job JOB`'s text."""
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                          text=True).stdout


def wait(job, timeout=180):
    """(JobState, ExitCode) once the job has ended; scancel'd and failed after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = show(job)
        state = re.search(r"JobState=(\w+)", out).group(1)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state, re.search(r"ExitCode=(\S+)", out).group(1)
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} did not finish in {timeout} s")


@pytest.fixture(scope="session")
def slurm():
    if not _cluster_up():
        pytest.skip("no Slurm cluster with 2 idle nodes (start ../shared/slurm/local-cluster.sh "
                    "as root)")
    return SimpleNamespace(show=show, wait=wait)


def samples_by_step(run_dir, resumed=None):
    """{step: (epoch, sorted indices all ranks trained on)} from a run's sample logs
    (trainer.log_samples). A run restarted in its own folder redoes the steps after the
    checkpoint it resumed from: the last record of each (rank, step) wins, and with `resumed`
    = (that step, the new world size) the records of the ranks beyond the new world size
    after that step are stale (their ranks died) and dropped."""
    last = {}
    for path in (run_dir / "samples").glob("rank*.jsonl"):
        rank = int(path.stem[4:])
        for record in map(json.loads, path.read_text().splitlines()):
            last[rank, record["step"]] = record
    if resumed is not None:
        step, world = resumed
        last = {(r, s): v for (r, s), v in last.items() if r < world or s <= step}
    out = {}
    for (_, step), record in sorted(last.items()):
        epoch, indices = out.setdefault(step, (record["epoch"], []))
        assert epoch == record["epoch"], f"ranks disagree on the epoch of step {step}"
        indices.extend(record["indices"])
    return {s: (e, sorted(v)) for s, (e, v) in out.items()}


def by_epoch(history):
    """{epoch: the indices trained on in it, in step order} of `samples_by_step`'s result."""
    out = {}
    for step in sorted(history):
        epoch, indices = history[step]
        out.setdefault(epoch, []).extend(indices)
    return out


@pytest.fixture
def trained_samples():
    return SimpleNamespace(by_step=samples_by_step, by_epoch=by_epoch)
