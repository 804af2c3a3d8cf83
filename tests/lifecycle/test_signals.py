"""SIGTERM, SIGHUP and SIGINT to `dtrain launch` stop the whole job: every rank gets the chance
to stop cleanly within the grace period, the rest is SIGKILLed, nothing is left behind, and
the launcher exits with 128+N."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

SLEEPER = """
import os, signal, sys, time
from pathlib import Path
import dtrain.distributed as dist
dist.init_process_group()
rank = dist.get_rank()
if os.environ.get("MODE") == "ignore":
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
if os.environ.get("MODE") == "handle":
    def stop(signum, frame):
        Path(f"stopped_{rank}").write_text(signal.Signals(signum).name)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
Path(f"up_{rank}").touch()
time.sleep(60)
"""


def _job_processes(tag):
    """The live processes of the job tagged `tag` (mpiexec, hydra_pmi_proxy, the rank
    supervisors and their children all inherit the launcher's environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if f"DTRAIN_LIFECYCLE_TAG={tag}\0".encode() in (proc / "environ").read_bytes():
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()!r}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _leftovers(tag, script):
    """What is still running of the job after the launcher has exited (allowing a moment for
    processes that are already on their way out)."""
    deadline = time.monotonic() + 3
    while True:
        pgrep = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True)
        left = _job_processes(tag) + pgrep.stdout.split()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _start(tmp_path, mode, *options):
    script = tmp_path / f"sleeper_{mode}.py"
    script.write_text(SLEEPER)
    tag = uuid.uuid4().hex
    env = {**os.environ, "MODE": mode, "DTRAIN_LIFECYCLE_TAG": tag}
    proc = subprocess.Popen([sys.executable, "-m", "dtrain.launcher", "launch", *options,
                             "--nproc-per-node", "2", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"up_{r}").exists() for r in (0, 1)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc, tag, script


@pytest.mark.parametrize("sig, said", [
    (signal.SIGTERM, "stopped by SIGTERM; every rank was stopped"),
    (signal.SIGHUP, "stopped by SIGHUP; every rank was stopped"),
    (signal.SIGINT, "interrupted; every rank was stopped"),
], ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_to_the_launcher_stops_every_rank(tmp_path, sig, said):
    proc, tag, script = _start(tmp_path, "plain")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert f"dtrain launch: {said}\n" in err and "Root cause" not in err, err
    assert not _leftovers(tag, script)


def test_a_rank_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    proc, tag, script = _start(tmp_path, "ignore", "--grace-period", "1")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert 1 <= time.monotonic() - start < 10
    assert ("stopped by SIGTERM; every rank was stopped (ranks [0, 1] did not stop within the "
            "1 s grace period and were killed)") in err
    assert not _leftovers(tag, script)


def test_a_rank_that_handles_sigterm_stops_cleanly(tmp_path):
    proc, tag, script = _start(tmp_path, "handle")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert [(tmp_path / f"stopped_{r}").read_text() for r in (0, 1)] == ["SIGTERM"] * 2
    assert "were killed" not in err and "BAD TERMINATION" not in out + err
    assert not _leftovers(tag, script)
