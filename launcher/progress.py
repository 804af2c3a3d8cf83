"""Rank 0's training progress: a tqdm bar in a terminal, periodic plain lines in a log.

A terminal is a stream whose `isatty()` is true, or any stream when `DTRAIN_TTY=1` (which
`dtrain launch` sets for the ranks when its own stdout is a terminal: their output reaches it
through a pipe that passes the bar's `\\r` redraws through). Without tqdm (`pip install
'dtrain[progress]'`) a terminal gets the plain lines too.
"""
import math
import os
import shutil
import sys
import time


def is_terminal(stream):
    """Whether progress written to `stream` reaches a terminal."""
    return os.environ.get("DTRAIN_TTY") == "1" or stream.isatty()


def _duration(seconds):
    """`42s`, `3m05s`, `2h07m`; `?` while unknown."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Progress of a run of `total_steps` steps, `steps_per_epoch` to an epoch.

    Plain lines (not a terminal) come every 10 % of the steps, at least every `every_s`
    seconds, and for the last step; each gives epoch, step/total, loss, samples/s and ETA.
    The ETA divides the steps left by the steps/s measured since the first `update` of this
    process, so a resumed run counts from the step it resumed at. `clock` is for tests.
    """

    def __init__(self, total_steps, steps_per_epoch, enabled, stream=None, *, every_s=30.0,
                 clock=time.monotonic):
        self.total, self.enabled = total_steps, enabled
        self.stream = stream or sys.stdout
        self.epochs = math.ceil(total_steps / steps_per_epoch)
        self.every_s, self.clock = every_s, clock
        self.every_steps = max(1, total_steps // 10)
        self._tqdm = None
        if enabled and is_terminal(self.stream):
            try:
                from tqdm import tqdm
                self._tqdm = tqdm
            except ImportError:
                pass
        self._bar = None
        self._first = None         # (step, time) of the first update: the ETA's origin
        self._last_line = clock()  # when the last plain line was written
        self._pending = None       # the newest plain line not written yet

    def update(self, step, epoch, loss, samples_per_s):
        """`step` steps done (1-based, of `total_steps`) in `epoch` (0-based, as in the
        metrics); `loss` of the last batch."""
        if not self.enabled:
            return
        now = self.clock()
        if self._first is None:
            self._first = (step, now)
        desc = f"epoch {epoch + 1}/{self.epochs}"
        stats = f"loss {loss:.4f} {samples_per_s:,.0f} samples/s"
        if self._tqdm is not None:
            if self._bar is None:
                # Through dtrain launch's pipe the width is unknown: COLUMNS, else 80.
                tty = self.stream.isatty()
                self._bar = self._tqdm(total=self.total, initial=step, file=self.stream,
                                       unit="step", desc=desc, postfix=stats,
                                       dynamic_ncols=tty,
                                       ncols=None if tty else shutil.get_terminal_size()[0])
                return
            self._bar.set_description_str(desc, refresh=False)
            self._bar.set_postfix_str(stats, refresh=False)
            self._bar.update(step - self._bar.n)
            return
        first_step, first_time = self._first
        rate = (step - first_step) / (now - first_time) if now > first_time else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.inf
        self._pending = (f"{desc} step {step}/{self.total} {stats} "
                         f"ETA {_duration(eta)}")
        if (step >= self.total or step % self.every_steps == 0
                or now - self._last_line >= self.every_s):
            self._flush_line(now)

    def _flush_line(self, now):
        self.stream.write(self._pending + "\n")
        self.stream.flush()
        self._pending, self._last_line = None, now

    def write(self, text):
        """Print a message line (also when disabled: messages are not progress) without
        breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self):
        """End the bar, or write the newest step's line if it was not written (a run stopped
        before its last step)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._pending is not None:
            self._flush_line(self.clock())
