"""`slurm` fixture: the two-node test cluster (../shared/slurm/local-cluster.sh, started by
.ci/run), or a skip where it is absent."""
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
