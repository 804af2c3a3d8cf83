"""What a user sees in a terminal: `dtrain launch` in a pseudo-terminal shows rank 0's tqdm
bar redrawn in place through the rank's output pipe (issue 11, item 13)."""
import os
import pty
import subprocess
import sys

import pytest


def test_progress_bar_reaches_a_terminal_through_dtrain_launch(configs, tmp_path):
    pytest.importorskip("tqdm")
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMP_")}
    proc = subprocess.Popen([sys.executable, "-m", "dtrain.launcher", "launch",
                             str(configs / "digits_mlp.yaml"),
                             f"experiment.output_dir={tmp_path / 'runs'}", "trainer.epochs=2"],
                            stdout=slave, stderr=slave, cwd=tmp_path, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    redraws = [part for part in text.split("\r") if part.startswith("[rank 0] epoch ")]
    assert len(redraws) >= 3, text                   # the bar redrawn in place, with the prefix
    assert "epoch 2/2" in text and "90/90" in text   # tqdm's n/total, and the epoch shown
    assert "summary: completed; 90/90 steps" in text
