"""The exit codes of `dtrain launch` (and of each rank it starts), stable and documented.

README's lifecycle table is checked against this enum by the tests, so the two cannot drift.
"""
import enum
import signal


class ExitCode(enum.IntEnum):
    """What the job's exit status means (MEANING says it in words)."""

    OK = 0
    RANK_FAILED = 1
    USAGE = 2
    NONFINITE = 3


MEANING = {
    ExitCode.OK: "success: every rank exited 0",
    ExitCode.RANK_FAILED: "a rank raised, exited non-zero or was killed; the report names it",
    ExitCode.USAGE: "bad command line or config, found before training started",
    ExitCode.NONFINITE: "the trainer stopped on a NaN/inf loss or gradient norm",
}
SIGNAL_MEANING = "the launcher got signal N and stopped every rank (130 SIGINT, 143 SIGTERM, " \
    "129 SIGHUP)"


def for_signal(signum):
    """128 + N: the launcher itself got signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP)."""
    return 128 + int(signal.Signals(signum))


def job_code(rank_codes):
    """The job's code from the non-zero exit codes of its ranks, root cause first: a rank's
    own USAGE/NONFINITE code is kept (every rank agrees on those), anything else is
    RANK_FAILED."""
    for code in rank_codes:
        if code in (ExitCode.USAGE, ExitCode.NONFINITE):
            return ExitCode(code)
    return ExitCode.RANK_FAILED if any(rank_codes) else ExitCode.OK
