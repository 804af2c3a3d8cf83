"""Start the ranks of a job (mpiexec locally or with a hostfile, srun inside a Slurm
allocation), watch them, stop the whole job when one fails or when `dtrain launch` gets
SIGTERM, SIGHUP, SIGINT or SIGUSR2 (Slurm's warning before the time limit: the job is then
requeued), and report how it ended with a stable exit code (launcher/exit_codes.py).
`--max-restarts` starts a failed job again, on fewer nodes when `--nnodes MIN:MAX` allows it
(launcher/elastic.py)."""
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from dtrain.launcher import elastic, records
from dtrain.launcher.exit_codes import MEANING, ExitCode, for_signal, job_code
from dtrain.launcher.identity import EMULATED_NODES, stale_variables

DEFAULT_GRACE_S = 10.0
# After a rank failed, the others are (or soon will be) blocked in a collective that rank
# never joins: no checkpoint can be agreed on, so they get this long (at most the grace
# period) before SIGKILL. Hydra ends them at once on one machine, but not under
# `-bootstrap slurm`, where a failed node's peers waited out the whole grace period (115 s).
FAILED_RANK_GRACE_S = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2)


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
    # seconds the ranks get to stop (a checkpoint, say) before SIGKILL; None: DEFAULT_GRACE_S
    grace_period: float | None = None
    min_nnodes: int | None = None  # elastic (--nnodes MIN:MAX): restart on >= MIN nodes
    nodes: tuple | None = None  # the nodes to run on (an elastic restart's); None: nnodes
    run_dir: str | None = None  # the trainer's run folder (to say where a restart resumes)

    def __post_init__(self):
        if self.grace_period is None:
            self.grace_period = DEFAULT_GRACE_S

    def node_names(self):
        """The nodes this job runs on (launcher/elastic.py says how they are named)."""
        if self.nodes is not None:
            return self.nodes
        slurm = os.environ["SLURM_JOB_NODELIST"] if in_slurm_allocation() else None
        return elastic.initial_nodes(self.nnodes, self.hostfile, slurm)

    def emulated(self):
        """Several nodes emulated on this machine (no hostfile, no Slurm allocation)."""
        return not (in_slurm_allocation() or self.hostfile) and (
            self.nodes is not None or self.nnodes > 1)


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
    nnodes = len(spec.nodes) if spec.nodes is not None else spec.nnodes
    ntasks = spec.nproc_per_node * nnodes
    if in_slurm_allocation() and spec.launcher == "srun":
        where = [f"--nodes={nnodes}", f"--nodelist={','.join(spec.nodes)}"] if spec.nodes \
            else []
        return ["srun", "--mpi=pmi2", *where, f"--ntasks={ntasks}",
                f"--ntasks-per-node={spec.nproc_per_node}", "--kill-on-bad-exit=1", *rank_cmd]
    cmd = [find_mpiexec(spec.mpiexec), "-n", str(ntasks)]
    if in_slurm_allocation() or (spec.hostfile and spec.nodes is not None):
        if in_slurm_allocation():
            cmd += ["-bootstrap", "slurm"]
        cmd += ["-hosts", ",".join(spec.node_names()), "-ppn", str(spec.nproc_per_node)]
    elif spec.hostfile:
        cmd += ["-f", spec.hostfile, "-ppn", str(spec.nproc_per_node)]
    return cmd + rank_cmd


def environment(spec, run_id, control_dir):
    env = {"DTRAIN_RUN_ID": run_id, "DTRAIN_CONTROL_DIR": control_dir,
           "PYTHONUNBUFFERED": "1", **spec.env}
    if spec.rank0_only:
        env["DTRAIN_RANK0_ONLY"] = "1"
    if spec.emulated():
        env[EMULATED_NODES] = ",".join(spec.node_names())
    return env


def dry_run_text(spec):
    """The exact command and environment, to paste into a job script."""
    env = environment(spec, "<run-id>", "<control-dir>")
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()
             if k not in ("DTRAIN_CONTROL_DIR", "DTRAIN_RUN_ID")]
    lines.append(shlex.join(command(spec)))
    return "\n".join(lines)


class StopRequests:
    """The stop signals `dtrain launch` got (SIGTERM, SIGHUP, SIGINT, SIGUSR2), in order.
    While jobs run, these handlers replace the defaults (so Ctrl-C raises no
    KeyboardInterrupt)."""

    def __init__(self):
        self.signals = []
        self._previous = {}

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _note(self, signum, frame):
        self.signals.append(signal.Signals(signum))


def _deliver(proc, spec, signum):
    """Ask every rank to stop, through mpiexec (or srun).

    NOTE: measured with MPICH's hydra (5.0.2): mpiexec passes SIGTERM and SIGINT on to every
    rank on every node (its proxy signals each rank's process group: the supervisor and the
    process that runs the rank) and keeps waiting for them: a rank that handles the signal
    runs on and exits normally, none is killed. But mpiexec dies of SIGHUP and SIGUSR2
    itself, orphaning the ranks, so SIGHUP and SIGUSR2 are delivered as SIGTERM. Signalling
    the ranks directly would reach only this node's, and mpiexec's process group does not
    hold them (hydra gives each rank a session of its own). srun cancels the step on SIGTERM
    (its tasks were killed before the trainer could checkpoint, seen here) and only prints
    the tasks' state on a single SIGINT, but passes SIGUSR2 on to every task: it gets that,
    which the trainer treats as a stop and a script's default handling as termination."""
    if spec.launcher == "srun" and in_slurm_allocation():
        proc.send_signal(signal.SIGUSR2)
        return
    proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)


def _kill(proc, control_dir):
    """The grace period is over: SIGKILL the ranks still running and end mpiexec (or srun).
    Returns those ranks.

    This host's ranks are killed by process group (each has its own: the supervisor and the
    process that runs the rank). Ranks on other hosts are left to mpiexec's or srun's force
    abort, a second SIGINT: hydra SIGKILLs every rank on every node, srun cancels the step."""
    late = [r for r in records.read_all(control_dir) if not r.ended]
    here = socket.gethostname()
    for r in late:
        if r.host == here and r.pgid > 1 and r.pgid != os.getpgrp():
            try:
                os.killpg(r.pgid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                pass
    if not _exits(proc, 1.0):  # ranks elsewhere still run
        for _ in range(2):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        if not _exits(proc, 3.0):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return sorted(r.rank for r in late)


def _exits(proc, seconds):
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _environment(spec, run_id, control_dir, out):
    """The launcher's environment: this one, less torchrun's identity variables (a stale
    RANK=0 WORLD_SIZE=1 would make every rank a 1-rank job), plus the job's own."""
    stale = stale_variables(os.environ)
    if stale:
        out.write(f"dtrain launch: ignoring {', '.join(stale)} from the environment (each "
                  "rank's identity comes from the MPI launcher)\n")
    env = {k: v for k, v in os.environ.items() if k not in stale}
    env.update(environment(spec, run_id, control_dir))
    if sys.stdout.isatty():  # the ranks' output reaches a terminal through their supervisors
        env["DTRAIN_TTY"] = "1"
    return env


def report(failed, code):
    """The root-cause report: the first rank that failed, with its traceback or signal."""
    first = failed[0]
    if code in (ExitCode.USAGE, ExitCode.NONFINITE):  # the trainer's own, deliberate stop
        return (f"dtrain launch: job ended with exit code {int(code)}: {MEANING[code]} "
                f"(rank {first.rank} on host {first.host} said why above)")
    others = [r.rank for r in failed[1:]]
    lines = ["", "=" * 78,
             f"dtrain launch: job failed (exit code {int(code)}). Root cause: rank {first.rank} "
             f"on host {first.host} (pid {first.pid}) {_what(first)}"]
    if first.kind is records.Kind.EXCEPTION:
        lines += ["", first.text.rstrip()]
    if others:
        lines.append(f"(ranks {others} ended after it)")
    lines.append("=" * 78)
    return "\n".join(lines)


def _what(rec):
    if rec.kind is records.Kind.EXCEPTION:
        return "raised an exception:"
    return rec.text


def _stopped(signum, killed, grace):
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signum.name}"
    late = (f" (ranks {killed} did not stop within the {grace:g} s grace period and were "
            "killed)") if killed else ""
    return f"dtrain launch: {what}; every rank was stopped{late}"


def _requeue(out):
    """Preempted under Slurm (`#SBATCH --signal=B:USR2@T` reaches only this process): once
    every rank has checkpointed and stopped, put the job back in the queue; its next start
    continues the same run folder (DTRAIN_RUN_ID=slurm-<job id>)."""
    job = os.environ["SLURM_JOB_ID"]
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode == 0:
        out.write(f"dtrain launch: preempted: Slurm job {job} requeued\n")
    else:
        out.write(f"dtrain launch: preempted, but `scontrol requeue {job}` failed: "
                  f"{done.stderr.strip()}\n")
    out.flush()


def run_job(spec, stop, out=sys.stderr):
    """Run the job once, stopping it on a rank's failure or a signal noted in `stop`; returns
    its exit code and the records of the ranks that failed, root cause first. The code is
    128+N when signal N stopped it, else `job_code` of the failed ranks (1 also when mpiexec
    failed with no rank to blame)."""
    run_id = os.environ.get("DTRAIN_RUN_ID") or uuid.uuid4().hex[:12]
    control_dir = tempfile.mkdtemp(prefix="dtrain-control-")
    try:
        proc = subprocess.Popen(command(spec), start_new_session=True,
                                env=_environment(spec, run_id, control_dir, out))
        stopped_by, deadline, asked, killed = None, None, 0, []
        while proc.poll() is None:
            if deadline is None and (stop.signals or
                                     any(r.failed for r in records.read_all(control_dir))):
                # a failed rank's peers would wait for it forever: stop them too
                stopped_by = stop.signals[0] if stop.signals else None
                _deliver(proc, spec, stopped_by or signal.SIGTERM)
                grace = spec.grace_period if stopped_by else min(spec.grace_period,
                                                                 FAILED_RANK_GRACE_S)
                deadline, asked = time.monotonic() + grace, len(stop.signals)
            elif deadline is not None and (time.monotonic() >= deadline or
                                           len(stop.signals) > asked):  # asked again: now
                killed = _kill(proc, control_dir)
            time.sleep(0.1)
        ended = records.read_all(control_dir)
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)
    if stopped_by:
        out.write(_stopped(stopped_by, killed, spec.grace_period) + "\n")
        if stopped_by == signal.SIGUSR2 and in_slurm_allocation():
            _requeue(out)
        return for_signal(stopped_by), []
    failed = [r for r in ended if r.failed]
    if failed:
        code = job_code([r.code for r in failed])
        out.write(report(failed, code) + "\n")
    elif proc.returncode:
        code = ExitCode.RANK_FAILED
        out.write(f"dtrain launch: job failed (exit code {int(code)}): {Path(proc.args[0]).name} "
                  f"exited with code {proc.returncode} and no rank reported a failure (see "
                  "its messages above)\n")
    else:
        code = ExitCode.OK
    out.flush()
    return code, failed


def launch(spec, max_restarts=0, out=sys.stderr):
    """Run the job, starting it again up to `max_restarts` times after a failure (the
    trainer resumes from its newest complete checkpoint): on the same nodes, or, when
    `spec.min_nnodes` is set, on those not lost, while at least that many remain. A stop
    signal ends it for good."""
    if spec.min_nnodes is not None:  # elastic: on the nodes there are now (MIN..MAX)
        spec = replace(spec, nodes=spec.node_names())
        if len(spec.nodes) < spec.min_nnodes:
            out.write(f"dtrain launch: only {len(spec.nodes)} node(s) to start on "
                      f"({', '.join(spec.nodes)}), fewer than --nnodes MIN={spec.min_nnodes}\n")
            return ExitCode.USAGE
    with StopRequests() as stop:
        for restart in range(1, max_restarts + 2):
            code, failed = run_job(spec, stop, out)
            if code == ExitCode.OK or stop.signals or restart > max_restarts:
                break
            if spec.min_nnodes is None:
                out.write(f"dtrain launch: restarting the job (restart {restart} of "
                          f"{max_restarts})\n")
                continue
            spec, line = _shrink(spec, failed, restart, max_restarts)
            out.write(line + "\n")
            out.flush()
            if spec is None:
                break
    return code


def _shrink(spec, failed, restart, max_restarts):
    """The spec of an elastic restart on the nodes not lost, and the line that says so; None
    and the final error when fewer than spec.min_nnodes remain."""
    nodes = spec.node_names()
    lost = elastic.lost_nodes(failed, nodes, spec.nproc_per_node, in_slurm_allocation())
    left = tuple(n for n in nodes if n not in lost)
    if len(left) < spec.min_nnodes:
        return None, elastic.too_few_line(lost, left, spec.min_nnodes)
    ppn = spec.nproc_per_node
    line = elastic.restart_line(lost, failed, ppn * len(nodes), ppn * len(left), spec.run_dir,
                                restart, max_restarts)
    return replace(spec, nodes=left), line
