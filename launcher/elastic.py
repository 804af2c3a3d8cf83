"""Elastic jobs: `dtrain launch --nnodes MIN:MAX --max-restarts R` starts a failed job again
on the nodes still available, as long as at least MIN are, and the trainer resumes from the
run's newest complete checkpoint at the new world size.

The nodes of a job: inside a Slurm allocation its nodes, with a hostfile its hosts, else
nodes emulated on this machine (`emu0`, `emu1`, ...). Ranks fill the nodes in order,
nproc_per_node each (mpiexec -ppn, srun --ntasks-per-node), so rank r runs on node
r // nproc_per_node; an emulated node's ranks learn its name and NODE_RANK through
DTRAIN_EMULATED_NODES (launcher/identity.py).

A node is lost when the job's root cause, the first rank that failed, was killed by a signal
or exited non-zero without a Python exception (an exception is a bug on a healthy node: the
job restarts on the same nodes). Inside an allocation, nodes that Slurm reports down,
drained, failing or not responding are lost as well.
"""
import argparse
import subprocess

from dtrain.launcher.exit_codes import ExitCode
from dtrain.launcher.hostlist import expand
from dtrain.launcher.records import Kind
from dtrain.launcher.rundir import Checkpoints

EMULATED_PREFIX = "emu"
# sinfo's long node states (%T) that mean a node can take no job step
_SLURM_LOST = ("down", "drain", "fail", "maint", "reboot", "power", "unknown")


def parse_nnodes(text):
    """`--nnodes` as torchrun writes it: "N" (fixed: (None, N)) or "MIN:MAX" ((MIN, MAX))."""
    low, sep, high = str(text).partition(":")
    try:
        bounds = (int(low), int(high)) if sep else (None, int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX (e.g. 1:2), got {text!r}") \
            from None
    if bounds[1] < 1 or (bounds[0] is not None and not 1 <= bounds[0] <= bounds[1]):
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX and N >= 1, got {text!r}")
    return bounds


def hostfile_hosts(path):
    """The host names of an MPI hostfile (`host` or `host:slots` per line, # comments)."""
    with open(path) as f:
        lines = (line.split("#")[0].strip() for line in f)
        return [line.split(":")[0].split()[0] for line in lines if line]


def initial_nodes(nnodes, hostfile, slurm_nodelist):
    """The names of the (at most `nnodes`) nodes a job starts on."""
    if slurm_nodelist:
        return tuple(expand(slurm_nodelist)[:nnodes])
    if hostfile:
        return tuple(hostfile_hosts(hostfile)[:nnodes])
    return tuple(f"{EMULATED_PREFIX}{i}" for i in range(nnodes))


def _how(rec):
    if rec.kind is Kind.EXCEPTION:
        return f"rank {rec.rank} raised an exception"
    return f"rank {rec.rank} {rec.text.split(':')[0]}"


def lost_nodes(failed, nodes, nproc_per_node, in_slurm):
    """{node: why} of the nodes lost by a failed run; `failed`: its failed ranks' records,
    root cause first."""
    lost = {}
    if failed:
        first = failed[0]
        node_is_gone = first.kind is Kind.SIGNAL or (
            first.kind is Kind.EXIT and first.code not in (ExitCode.USAGE, ExitCode.NONFINITE))
        if node_is_gone and first.rank // nproc_per_node < len(nodes):
            lost[nodes[first.rank // nproc_per_node]] = _how(first)
    if in_slurm:
        for node, state in slurm_states(nodes).items():
            if node not in lost and _unusable(state):
                lost[node] = f"Slurm reports it {state}"
    return lost


def _unusable(state):
    return state.endswith("*") or state.lower().startswith(_SLURM_LOST)


def slurm_states(nodes):
    """{node: sinfo's long state}, e.g. {"node2": "draining"} ({} when sinfo fails)."""
    try:
        done = subprocess.run(["sinfo", "-h", "-N", "-n", ",".join(nodes), "-o", "%N %T"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    pairs = (line.split() for line in done.stdout.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2} if done.returncode == 0 else {}


def resume_point(run_dir):
    """Where the restarted trainer resumes: its run's newest listed checkpoint ("" for a
    script, whose checkpoints the launcher does not know)."""
    if run_dir is None:
        return ""
    entries = Checkpoints(run_dir).entries()
    if not entries:
        return ", starting from step 0 (no checkpoint yet)"
    return f", resuming from step {entries[-1]['step']}"


def restart_line(lost, failed, ranks_before, ranks_after, run_dir, restart, max_restarts):
    """The log line of one elastic restart."""
    if lost:
        what = "; ".join(f"node {node} lost ({why})" for node, why in lost.items())
    else:
        what = "no node lost" + (f" ({_how(failed[0])})" if failed else "")
    ranks = f"{ranks_after} rank" + ("s" if ranks_after != 1 else "")
    return (f"dtrain launch: {what}; restarting on {ranks} (was {ranks_before})"
            f"{resume_point(run_dir)} (restart {restart} of {max_restarts})")


def too_few_line(lost, left, min_nodes):
    """The final error when fewer than MIN nodes remain."""
    names = ", ".join(f"{node} ({why})" for node, why in lost.items())
    return (f"dtrain launch: job failed for good: node(s) {names} lost; {len(left)} node(s) "
            f"left ({', '.join(left) or 'none'}), fewer than --nnodes MIN={min_nodes}")
