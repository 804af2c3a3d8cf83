"""launcher/progress.py: plain lines in a log (values, epoch, ETA with a fake clock), the tqdm
bar on a terminal, nothing when disabled."""
import io
import random
import re
import sys

import pytest

from dtrain.launcher.progress import Progress


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _no_tty_env(monkeypatch):
    monkeypatch.delenv("DTRAIN_TTY", raising=False)


def _eta_s(line):
    m = re.search(r"ETA (?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", line)
    h, mi, s = (int(g or 0) for g in m.groups())
    return 3600 * h + 60 * mi + s


def run(progress, clock, steps, spe, seconds_per_step, loss=0.5, rate=64.0):
    for step in steps:
        clock.t += seconds_per_step() if callable(seconds_per_step) else seconds_per_step
        progress.update(step, (step - 1) // spe, loss, rate)


def test_plain_lines_every_tenth_with_epoch_and_eta_of_a_resumed_run():
    out, clock = io.StringIO(), Clock()
    p = Progress(100, 25, True, out, clock=clock)
    run(p, clock, range(41, 101), 25, 0.5)         # resumed at step 40: 2 steps/s from here
    p.close()
    lines = out.getvalue().splitlines()
    assert [int(re.search(r"step (\d+)/100", x).group(1)) for x in lines] == \
        [50, 60, 70, 80, 90, 100]
    assert lines[0] == "epoch 2/4 step 50/100 loss 0.5000 64 samples/s ETA 25s"
    assert lines[-1] == "epoch 4/4 step 100/100 loss 0.5000 64 samples/s ETA 0s"


def test_eta_from_measured_steps_per_second():
    random.seed(0)
    out, clock = io.StringIO(), Clock()
    p = Progress(1000, 100, True, out, clock=clock)
    run(p, clock, range(1, 501), 100, lambda: random.uniform(0.08, 0.12), rate=10_000.0)
    eta = _eta_s(out.getvalue().splitlines()[-1])   # step 500: 500 steps of ~0.1 s left
    assert 45 <= eta <= 55, out.getvalue()
    assert "10,000 samples/s" in out.getvalue()


def test_slow_steps_give_a_line_at_least_every_30_s_and_close_writes_the_last_step():
    out, clock = io.StringIO(), Clock()
    p = Progress(1000, 100, True, out, clock=clock)
    run(p, clock, range(1, 8), 100, 12.0)          # lines at steps 3 (36 s) and 6 (72 s)
    p.write("preempted at step 7: checkpoint written")
    p.close()                                       # the stopped run's newest step, once
    p.close()
    lines = out.getvalue().splitlines()
    assert [re.search(r"step (\d+)/", x).group(1) for x in lines if "ETA" in x] == \
        ["3", "6", "7"]
    assert lines[2] == "preempted at step 7: checkpoint written"
    assert lines[1].endswith("ETA 3h18m")           # 994 steps x 12 s


def test_disabled_writes_no_progress():
    out, clock = io.StringIO(), Clock()
    p = Progress(10, 5, False, FakeTTY(), clock=clock)
    q = Progress(10, 5, False, out, clock=clock)
    for bar in (p, q):
        run(bar, clock, range(1, 11), 5, 40.0)
        bar.close()
    assert out.getvalue() == "" and p.stream.getvalue() == ""


@pytest.mark.parametrize("via", ["isatty", "DTRAIN_TTY"])
def test_terminal_gets_a_tqdm_bar(monkeypatch, via):
    pytest.importorskip("tqdm")
    if via == "DTRAIN_TTY":
        monkeypatch.setenv("DTRAIN_TTY", "1")
    stream = FakeTTY() if via == "isatty" else io.StringIO()
    clock = Clock()
    p = Progress(20, 10, True, stream, clock=clock)
    run(p, clock, range(1, 21), 10, 0.1, loss=0.25)
    p.write("step 20: test loss 0.2000")
    p.close()
    text = stream.getvalue()
    assert "\r" in text and "20/20" in text and "epoch 2/2" in text
    assert "loss 0.2500" in text and "samples/s" in text
    assert "step 20: test loss 0.2000\n" in text


def test_terminal_without_tqdm_gets_plain_lines(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` raises ImportError
    stream, clock = FakeTTY(), Clock()
    p = Progress(10, 10, True, stream, clock=clock)
    run(p, clock, range(1, 11), 10, 1.0)
    p.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue()
    assert lines[0].endswith("ETA ?") and lines[4].endswith("ETA 5s")
