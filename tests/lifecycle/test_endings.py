"""How `dtrain launch` jobs end, with real ranks: a rank that finishes early never cuts the
others short, and the exit code is the same on every run of the same failure. Also the rank
records and the output pump, without processes."""
import os
import pty
import select
import subprocess
import sys
import time

import numpy as np
import pytest

import dtrain as dt
from dtrain.launcher import records
from dtrain.launcher.rank import _pump, split_output
from dtrain.launcher.records import Kind, RankRecord

SAVE_AFTER_THE_LOOP = """
import time
import numpy as np
import dtrain as dt
import dtrain.distributed as dist
dist.init_process_group()
for step in range(3):
    dist.all_reduce(dt.ones(4))
if dist.get_rank() == 0:  # the other rank has ended by the time this starts
    time.sleep(0.5)
    dt.save({"w": dt.tensor(np.arange(20 * 2**20 // 8, dtype=np.float64))}, "final.dtrain")
"""


def test_rank0_saves_after_the_loop_while_the_other_rank_ends(dtrain_cli, tmp_path):
    (tmp_path / "train.py").write_text(SAVE_AFTER_THE_LOOP)
    proc = dtrain_cli("launch", "--nproc-per-node", "2", "train.py", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    w = dt.load(tmp_path / "final.dtrain")["w"].numpy()
    np.testing.assert_array_equal(w, np.arange(20 * 2**20 // 8, dtype=np.float64))
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


UNEVEN = """
import sys, time
from pathlib import Path
import dtrain as dt
import dtrain.distributed as dist
dist.init_process_group()
dist.all_reduce(dt.ones(4))
rank = dist.get_rank()
if rank == 1:
    sys.exit(0)  # early, while rank 0 still works
if rank == 0:
    time.sleep(1.0)
    Path("rank0.done").write_text("done")
"""


def test_early_exit_and_uneven_work_run_to_completion(dtrain_cli, tmp_path):
    (tmp_path / "uneven.py").write_text(UNEVEN)
    proc = dtrain_cli("launch", "--nproc-per-node", "3", "uneven.py", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "rank0.done").read_text() == "done"
    assert "BAD TERMINATION" not in proc.stdout + proc.stderr


def test_digits_trainer_on_four_ranks_exits_0(dtrain_cli, configs, tmp_path):
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", "distributed.nproc_per_node=4",
                      "trainer.max_steps=3", f"experiment.output_dir={tmp_path / 'run'}",
                      "--rank0-only", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "summary: completed; 3/3 steps" in proc.stdout
    assert "BAD TERMINATION" not in proc.stdout + proc.stderr


FAILING = """
import os, signal, sys
import dtrain as dt
import dtrain.distributed as dist
dist.init_process_group()
for step in range(1000):
    dist.all_reduce(dt.ones(4))
    if dist.get_rank() == 1 and step == 3:
        mode = os.environ["MODE"]
        if mode == "raise":
            raise RuntimeError("exploded at step 3")
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(3)
"""


@pytest.mark.parametrize("mode, code, text", [
    *[pytest.param("raise", 1, "raised an exception:", id=f"raise-run{n}") for n in (1, 2, 3)],
    pytest.param("kill", 1, "killed by SIGKILL", id="sigkill"),
    pytest.param("exit3", 3, "job ended with exit code 3: the trainer stopped on a NaN/inf "
                 "loss or gradient norm (rank 1 on host", id="exit3"),
])
def test_exit_code_is_the_same_on_every_run(dtrain_cli, tmp_path, mode, code, text):
    (tmp_path / "failing.py").write_text(FAILING)
    proc = dtrain_cli("launch", "--nproc-per-node", "2", "failing.py", env={"MODE": mode},
                      timeout=60)
    assert proc.returncode == code, proc.stderr
    if code == 1:
        assert f"job failed (exit code {code}). Root cause: rank 1 " in proc.stderr, proc.stderr
    assert text in proc.stderr


def test_a_rank_record_round_trips_and_its_first_end_wins(tmp_path):
    start = RankRecord(3, Kind.RUNNING, host="node7", pid=11, pgid=10, time=1.0)
    assert RankRecord.from_json(start.to_json()) == start
    assert not start.ended and not start.failed
    records.write(tmp_path, start)
    raised = RankRecord(3, Kind.EXCEPTION, 1, "Traceback ...", pid=12)
    records.write(tmp_path, raised)
    records.write(tmp_path, RankRecord(3, Kind.EXIT, 1, "exited with code 1", pid=12))
    records.write(tmp_path, RankRecord(0, Kind.OK))
    assert [r.kind for r in records.read_all(tmp_path)] == [Kind.EXCEPTION, Kind.OK]
    assert records.read_all(tmp_path)[0] == raised and raised.failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank_0.json", "rank_3.json"]


def test_output_splits_into_lines_and_for_a_terminal_into_redraws():
    data = b"epoch 1\n\r 10%|#  |\r 20%|## |\r\nlast"
    assert split_output(data, terminal=False) == ([b"epoch 1\n", b"\r 10%|#  |\r 20%|## |\r\n"],
                                                  b"last")
    assert split_output(data, terminal=True) == (
        [b"epoch 1\n", b"\r", b" 10%|#  |\r", b" 20%|## |\r\n"], b"last")
    assert split_output(b" 30%|", terminal=True) == ([], b" 30%|")


class _Stream:
    def __init__(self):
        self.buffer = self
        self.writes = []

    def write(self, data):
        self.writes.append(data)

    def flush(self):
        pass


def test_pump_passes_each_redraw_on_at_once_with_the_prefix():
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(out_w, b"\r 10%|#|\r 20%|##|")
    os.write(err_w, b"warning: no newline")
    os.close(out_w)
    os.close(err_w)
    out, err = _Stream(), _Stream()
    _pump([(out_r, out), (err_r, err)], b"[rank 0] ", quiet_stdout=False, terminal=True)
    assert out.writes == [b"[rank 0] \r[rank 0]  10%|#|\r", b"[rank 0]  20%|##|\n"]
    assert err.writes == [b"[rank 0] warning: no newline\n"]


REDRAW = """
import os, sys, time
from pathlib import Path
print("TTY", os.environ.get("DTRAIN_TTY"), flush=True)
sys.stdout.write(" 50%|#####|\\r")
sys.stdout.flush()
deadline = time.monotonic() + 30
while not Path("seen").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_a_terminal_sees_a_redraw_before_its_line_ends(tmp_path):
    (tmp_path / "bar.py").write_text(REDRAW)
    terminal, tty = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dtrain.launcher", "launch", "bar.py"],
                            stdout=tty, stderr=subprocess.PIPE, cwd=tmp_path)
    os.close(tty)
    seen, deadline = b"", time.monotonic() + 30
    while b"[rank 0]  50%|#####|\r" not in seen and time.monotonic() < deadline:
        if select.select([terminal], [], [], 0.1)[0]:
            seen += os.read(terminal, 4096)
    (tmp_path / "seen").touch()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    os.close(terminal)
    assert b"[rank 0] TTY 1\r\n[rank 0]  50%|#####|\r" in seen, seen
