"""`dtrain slurm CONFIG`: write an sbatch script from the config's `slurm:` block and submit
it. The script runs `dtrain launch` inside the allocation (its ranks start there through
mpiexec or srun, `distributed.launcher`) and asks for SIGUSR2 before the time limit, sent
to the batch shell only (`B:`; hydra's proxies die of SIGUSR2): `dtrain launch`, exec'd by
it, has every rank checkpoint and stop within the time left, then requeues the job.

Each submission gets its own folder, `<output_dir>/submit-<YYYYmmdd-HHMMSS>/`, holding the
resolved `config.yaml` the job launches and `job.sbatch`; the job's run directory is
`<output_dir>/slurm-<jobid>/` (from DTRAIN_RUN_ID), which a requeued job continues, and its
log `<output_dir>/slurm-<jobid>.out` is appended to, so each requeue's output stays.

`--nnodes MIN:MAX` asks for MAX nodes with `--no-kill` (Slurm keeps the allocation when one
of its nodes fails) and has `dtrain launch` restart the job on the nodes left
(launcher/elastic.py), up to `--max-restarts` times.
"""
import itertools
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dtrain.launcher import config as cfgmod


def script(cfg, config_path, nnodes=None, max_restarts=None):
    """The sbatch script for a validated config whose resolved copy is at `config_path`;
    `nnodes`: (MIN, MAX) of `--nnodes` (MIN None: fixed), else the config's slurm.nodes."""
    s, dist, exp = cfg["slurm"] or cfgmod.defaults("slurm"), cfg["distributed"], cfg["experiment"]
    per_node = s["ntasks_per_node"] or dist["nproc_per_node"]
    low, nodes = nnodes or (None, s["nodes"])
    out_dir = Path(exp["output_dir"]).resolve()
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={s['job_name'] or exp['name']}",
             f"#SBATCH --nodes={nodes}",
             f"#SBATCH --ntasks-per-node={per_node}",
             f"#SBATCH --time={s['time']}",
             f"#SBATCH --output={out_dir}/slurm-%j.out",
             "#SBATCH --open-mode=append",
             f"#SBATCH --signal=B:USR2@{s['signal_before_s']}"]
    if s["gpus_per_node"]:
        lines.append(f"#SBATCH --gpus-per-node={s['gpus_per_node']}")
    if s["cpus_per_task"]:
        lines.append(f"#SBATCH --cpus-per-task={s['cpus_per_task']}")
    for key in ("partition", "account"):
        if s[key]:
            lines.append(f"#SBATCH --{key}={s[key]}")
    if s["requeue"]:
        lines.append("#SBATCH --requeue")
    if low is not None:
        lines.append("#SBATCH --no-kill")
    lines += [str(line) for line in s["extra"]]
    launch = [sys.executable, "-m", "dtrain.launcher", "launch", str(config_path),
              f"distributed.nproc_per_node={per_node}", f"distributed.nnodes={nodes}",
              f"--grace-period={max(1, s['signal_before_s'] - 5)}"]
    if low is not None:
        launch.append(f"--nnodes={low}:{nodes}")
    if max_restarts:
        launch.append(f"--max-restarts={max_restarts}")
    lines += ["", "# srun starts the ranks; each takes its identity from SLURM_PROCID / PMI.",
              "export DTRAIN_RUN_ID=slurm-$SLURM_JOB_ID",
              f"cd {shlex.quote(str(Path.cwd()))}",
              "exec " + shlex.join(launch), ""]
    return "\n".join(lines)


def _submit_dir(out_dir, stamp):
    """A new folder `submit-<stamp>` in `out_dir` (`-2`, `-3`... when taken)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = out_dir / (f"submit-{stamp}" if n == 1 else f"submit-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            pass


def submit(cfg, dry_run=False, nnodes=None, max_restarts=None):
    """Write the resolved config and the script into a new submission folder and sbatch it
    (`dry_run`: print the script, write nothing); `nnodes`, `max_restarts`: as `script`'s."""
    out_dir = Path(cfg["experiment"]["output_dir"]).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if dry_run:
        sys.stdout.write(script(cfg, out_dir / f"submit-{stamp}" / "config.yaml", nnodes,
                                max_restarts))
        return 0
    if shutil.which("sbatch") is None:
        sys.stderr.write("dtrain slurm: sbatch not found: run this on a Slurm login node (or "
                         "use --dry-run to see the script)\n")
        return 2
    folder = _submit_dir(out_dir, stamp)
    config_path = folder / "config.yaml"
    config_path.write_text(cfgmod.dump(cfg))
    path = folder / "job.sbatch"
    path.write_text(script(cfg, config_path, nnodes, max_restarts))
    proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(f"dtrain slurm: sbatch failed: {proc.stderr.strip()}\n")
        return proc.returncode
    job = proc.stdout.strip().split(";")[0]
    print(f"submitted job {job} ({folder}); logs: {out_dir}/slurm-{job}.out; "
          f"run directory: {out_dir}/slurm-{job}")
    return 0
