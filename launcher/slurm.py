"""`dtrain slurm CONFIG`: write an sbatch script from the config's `slurm:` block and submit
it. The script runs `dtrain launch` inside the allocation (which then uses srun), asks for
SIGUSR2 before the time limit (the trainer checkpoints and requeues the job)."""
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from dtrain.launcher import config as cfgmod


def script(cfg, config_path):
    """The sbatch script for a validated config whose resolved copy is at `config_path`."""
    s, dist, exp = cfg["slurm"] or cfgmod.defaults("slurm"), cfg["distributed"], cfg["experiment"]
    per_node = s["ntasks_per_node"] or dist["nproc_per_node"]
    out_dir = Path(exp["output_dir"]).resolve()
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={s['job_name'] or exp['name']}",
             f"#SBATCH --nodes={s['nodes']}",
             f"#SBATCH --ntasks-per-node={per_node}",
             f"#SBATCH --time={s['time']}",
             f"#SBATCH --output={out_dir}/slurm-%j.out",
             f"#SBATCH --signal=USR2@{s['signal_before_s']}"]
    if s["gpus_per_node"]:
        lines.append(f"#SBATCH --gpus-per-node={s['gpus_per_node']}")
    if s["cpus_per_task"]:
        lines.append(f"#SBATCH --cpus-per-task={s['cpus_per_task']}")
    for key in ("partition", "account"):
        if s[key]:
            lines.append(f"#SBATCH --{key}={s[key]}")
    if s["requeue"]:
        lines.append("#SBATCH --requeue")
    lines += [str(line) for line in s["extra"]]
    launch = [sys.executable, "-m", "dtrain.launcher", "launch", str(config_path),
              f"distributed.nproc_per_node={per_node}", f"distributed.nnodes={s['nodes']}"]
    lines += ["", "# srun starts the ranks; each takes its identity from SLURM_PROCID / PMI.",
              "export DTRAIN_RUN_ID=slurm-$SLURM_JOB_ID",
              f"cd {shlex.quote(str(Path.cwd()))}",
              "exec " + shlex.join(launch), ""]
    return "\n".join(lines)


def submit(cfg, dry_run=False):
    out_dir = Path(cfg["experiment"]["output_dir"])
    config_path = out_dir.resolve() / "config.yaml"
    text = script(cfg, config_path)
    if dry_run:
        sys.stdout.write(text)
        return 0
    if shutil.which("sbatch") is None:
        sys.stderr.write("dtrain slurm: sbatch not found: run this on a Slurm login node (or "
                         "use --dry-run to see the script)\n")
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(cfgmod.dump(cfg))
    path = out_dir / "job.sbatch"
    path.write_text(text)
    proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(f"dtrain slurm: sbatch failed: {proc.stderr.strip()}\n")
        return proc.returncode
    job = proc.stdout.strip().split(";")[0]
    print(f"submitted job {job}; logs: {out_dir.resolve()}/slurm-{job}.out")
    return 0
