"""Start the ranks of a job (mpiexec locally or with a hostfile, srun inside a Slurm
allocation), watch them, stop the whole job when one fails, and report the root cause."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from dtrain.launcher.hostlist import expand

KILL_GRACE_S = 3.0


@dataclass
class JobSpec:
    """What to run and where: `target` is ["trainer", CONFIG] or [SCRIPT, ARGS...]."""

    target: list
    nproc_per_node: int = 1
    nnodes: int = 1
    hostfile: str | None = None
    mpiexec: str | None = None
    launcher: str = "mpiexec"  # or "srun": start ranks with srun inside a Slurm allocation
    rank0_only: bool = False
    env: dict = field(default_factory=dict)


def in_slurm_allocation():
    return "SLURM_JOB_ID" in os.environ and "SLURM_NTASKS" in os.environ


def find_mpiexec(configured=None):
    """The mpiexec to use: configured, next to this Python (the mpich wheel), or on PATH."""
    if configured:
        return configured
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    found = shutil.which("mpiexec")
    if not found:
        raise RuntimeError("mpiexec not found: pip install 'dtrain[mpi]' (brings the mpich "
                           "wheel) or set distributed.mpiexec in the config")
    return found


def command(spec):
    """The launcher command line for `spec`.

    Outside Slurm: mpiexec (with the hostfile, if any). Inside an allocation: by default
    mpiexec on the allocation's nodes (hydra starts its proxies with srun; PMI stays
    hydra's own), or `srun --mpi=pmi2` directly with `launcher: srun`. NOTE: with the PyPI
    mpich wheel and Slurm 22.05's pmi2 plugin, srun jobs intermittently failed here with
    corrupted PMI2 requests ("value not properly terminated"); hydra's PMI did not."""
    rank_cmd = [sys.executable, "-m", "dtrain.launcher.rank", *spec.target]
    ntasks = spec.nproc_per_node * spec.nnodes
    if in_slurm_allocation() and spec.launcher == "srun":
        return ["srun", "--mpi=pmi2", f"--ntasks={ntasks}",
                f"--ntasks-per-node={spec.nproc_per_node}", "--kill-on-bad-exit=1", *rank_cmd]
    cmd = [find_mpiexec(spec.mpiexec), "-n", str(ntasks)]
    if in_slurm_allocation():
        hosts = expand(os.environ["SLURM_JOB_NODELIST"])[:spec.nnodes]
        cmd += ["-bootstrap", "slurm", "-hosts", ",".join(hosts), "-ppn",
                str(spec.nproc_per_node)]
    elif spec.hostfile:
        cmd += ["-f", spec.hostfile, "-ppn", str(spec.nproc_per_node)]
    return cmd + rank_cmd


def environment(spec, run_id, control_dir):
    env = {"DTRAIN_RUN_ID": run_id, "DTRAIN_CONTROL_DIR": control_dir,
           "PYTHONUNBUFFERED": "1", **spec.env}
    if spec.rank0_only:
        env["DTRAIN_RANK0_ONLY"] = "1"
    return env


def dry_run_text(spec):
    """The exact command and environment, to paste into a job script."""
    env = environment(spec, "<run-id>", "<control-dir>")
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()
             if k not in ("DTRAIN_CONTROL_DIR", "DTRAIN_RUN_ID")]
    lines.append(shlex.join(command(spec)))
    return "\n".join(lines)


def _records(control_dir):
    out = []
    for path in Path(control_dir).glob("rank_*.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r["time"])


def _stop(proc):
    """End the whole job: its process group gets SIGTERM, then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def report(records, code):
    """The root-cause report: the first rank that failed, with its traceback or signal."""
    first = records[0]
    others = [r["rank"] for r in records[1:]]
    lines = ["", "=" * 78,
             f"dtrain launch: job failed (exit code {code}). Root cause: rank {first['rank']} "
             f"on host {first['host']} (pid {first['pid']}) {_what(first)}"]
    if first["kind"] == "exception":
        lines += ["", first["text"].rstrip()]
    if others:
        lines.append(f"(ranks {others} ended after it)")
    lines.append("=" * 78)
    return "\n".join(lines)


def _what(rec):
    if rec["kind"] == "exception":
        return "raised an exception:"
    return rec["text"]


def run_job(spec, out=sys.stderr):
    """Run the job once; returns its exit code (0 on success)."""
    run_id = os.environ.get("DTRAIN_RUN_ID") or uuid.uuid4().hex[:12]
    control_dir = tempfile.mkdtemp(prefix="dtrain-control-")
    env = {**os.environ, **environment(spec, run_id, control_dir)}
    proc = subprocess.Popen(command(spec), env=env, start_new_session=True)
    try:
        while proc.poll() is None:
            if any(r["code"] for r in _records(control_dir)):
                _stop(proc)  # one rank failed: do not wait for the others to hang
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(proc)
        out.write("\ndtrain launch: interrupted; every rank was stopped\n")
        return 130
    code = proc.wait()
    records = [r for r in _records(control_dir) if r["code"]]
    shutil.rmtree(control_dir, ignore_errors=True)
    if records:
        code = code or records[0]["code"] or 1
        out.write(report(records, code) + "\n")
        out.flush()
    return code


def launch(spec, max_restarts=0, out=sys.stderr):
    """Run the job, starting it again up to `max_restarts` times after a failure (the
    trainer resumes from its newest complete checkpoint)."""
    code = 0
    for attempt in range(max_restarts + 1):
        if attempt:
            out.write(f"dtrain launch: restarting the job (restart {attempt} of "
                      f"{max_restarts})\n")
        code = run_job(spec, out)
        if code in (0, 130):
            return code
    return code
