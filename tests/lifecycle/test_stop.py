"""A signal to `dtrain launch` stops a training job cleanly: every trainer rank agrees on a
step, checkpoints, exits; the launcher exits 128+N; the run resumes from that checkpoint
(issue 11, item 2, the trainer's side)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from dtrain.launcher.rundir import Checkpoints


@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 0), (signal.SIGHUP, 0),
                                          (signal.SIGUSR2, 0), (signal.SIGTERM, 2)])
def test_signal_to_the_launcher_checkpoints_then_stops(dtrain_cli, configs, tmp_path, sig,
                                                       workers):
    """With DataLoader workers too: they get the signal with their rank's process group."""
    out = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMP_")}
    proc = subprocess.Popen([sys.executable, "-m", "dtrain.launcher", "launch",
                             str(configs / "digits_mlp.yaml"), f"experiment.output_dir={out}",
                             "trainer.epochs=500", "trainer.checkpoint_every=100000",
                             "trainer.progress=false", "distributed.nproc_per_node=2",
                             f"data.num_workers={workers}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    run = out / "version_0"
    deadline = time.monotonic() + 60
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert f"dtrain launch: stopped by {sig.name}; every rank was stopped" in stderr
    # mpiexec dies of SIGHUP itself: the launcher passes every stop on to ranks as SIGTERM
    step = int(stdout.split("stopped by SIGTERM at step ")[1].split(":")[0])
    entries = Checkpoints(run).entries()
    assert entries[-1]["step"] == step, (entries, stdout)
    again = dtrain_cli("launch", configs / "digits_mlp.yaml", f"experiment.output_dir={out}",
                       "trainer.epochs=500", f"trainer.max_steps={step + 3}",
                       "trainer.progress=false", "distributed.nproc_per_node=2",
                       "trainer.resume=latest", timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"resumed from step {step} of {step + 3}" in again.stdout
