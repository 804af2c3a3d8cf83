"""Per-rank supervisor: `python -m dtrain.launcher.rank TARGET...` (started by mpiexec/srun).

It sets the rank's identity from the MPI launcher, runs the target in a child process whose
output it prefixes with `[rank k]`, passes on to the child the signals sent to it alone, and
records how the rank ended in the launcher's control directory (launcher/records.py): the
traceback of an uncaught exception, the exit code, or the signal that killed it. The
launcher reads these records to stop the whole job at once and to print the root cause.
"""
import os
import re
import runpy
import selectors
import signal
import sys
import threading
import traceback
from pathlib import Path

from dtrain.launcher import records
from dtrain.launcher.identity import rank_environment
from dtrain.launcher.records import Kind, RankRecord

SIGNAL_HINTS = {signal.SIGKILL: "out of memory, or killed by the scheduler?",
                signal.SIGSEGV: "a crash in native code?", signal.SIGTERM: "terminated"}
# mpiexec passes SIGTERM and SIGINT on to every rank (launcher/run.py sends them to stop a
# job), Slurm sends SIGUSR1/SIGUSR2 before a time limit: the child, which runs the rank, decides.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# A complete piece of output: a line, or (for a terminal) a `\r`-ended redraw of a progress bar.
_PIECE = {False: re.compile(rb"[^\n]*\n"), True: re.compile(rb"[^\r\n]*(?:\r\n?|\n)")}


def record(kind, code=0, text="", pid=None):
    """Write this rank's record into the launcher's control directory, where there is one (a
    rank started by hand has none; a node that does not share the launcher's /tmp neither)."""
    control = os.environ.get("DTRAIN_CONTROL_DIR")
    if control and os.path.isdir(control):
        records.write(control, RankRecord(int(os.environ["RANK"]), kind, code, text,
                                          pid=pid or os.getpid()))


def run_target(argv):
    """Run `trainer CONFIG` or `SCRIPT ARGS...` in this (child) process."""
    if argv[0] == "trainer":
        from dtrain.launcher.trainer import main

        return main(argv[1])
    sys.argv = list(argv)
    sys.path.insert(0, str(Path(argv[0]).resolve().parent))
    runpy.run_path(argv[0], run_name="__main__")
    return 0


def _child(argv, out_w, err_w):
    """Run the target with its output into the pipes; its exit code (failures recorded)."""
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    try:
        code = int(run_target(argv) or 0)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = int(e.code or 0)
        else:  # sys.exit("message"): Python prints the message and exits 1
            sys.stderr.write(f"{e.code}\n")
            code = 1
        if code:
            record(Kind.EXIT, code, f"exited with code {code} (SystemExit)")
    except BaseException:  # the rank's failure: keep its traceback for the root-cause report
        text = traceback.format_exc()
        sys.stderr.write(text)
        record(Kind.EXCEPTION, 1, text)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _end_child(code):
    """End the child process as `python script.py` would on success, abruptly on failure.

    Success is a normal interpreter exit (SystemExit): it joins non-daemon threads, runs
    atexit handlers, and mpi4py's MPI_Finalize, which mpi4py registers with Py_AtExit (so
    `os._exit` and `atexit._run_exitfuncs` both skip it). Hydra treats a rank that initialized
    MPI and exits without finalizing as a crash and SIGKILLs every other rank: ranks still
    working (rank 0 saving a checkpoint) were lost that way. A failure uses `os._exit`, which
    skips MPI_Finalize on purpose: MPICH's finalize waits for every rank, and the others may be
    blocked in a collective with this one; the unfinalized exit makes hydra end the job now.
    """
    if code == 0:
        raise SystemExit(0)
    os._exit(code if 0 < code < 256 else 1)


def split_output(data, terminal):
    """The complete pieces at the start of `data` and the incomplete rest: pieces end with
    `\\n`, and when the output goes to a terminal also with `\\r` (a progress bar redrawing
    its line, shown at once rather than held until a newline that never comes)."""
    pieces = _PIECE[terminal].findall(data)
    return pieces, data[sum(map(len, pieces)):]


def _pump(pipes, prefix, quiet_stdout, terminal):
    """Copy the child's output piece by piece with the rank prefix until both pipes close."""
    sel = selectors.DefaultSelector()
    partial = {}
    for fd, dest in pipes:
        sel.register(fd, selectors.EVENT_READ, dest)
        partial[fd] = b""
    open_fds = len(pipes)
    while open_fds:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if chunk:
                pieces, partial[key.fd] = split_output(partial[key.fd] + chunk, terminal)
            else:  # closed: the last line may lack its newline
                sel.unregister(key.fd)
                open_fds -= 1
                pieces = [partial[key.fd] + b"\n"] if partial[key.fd] else []
            if pieces and not (quiet_stdout and key.data is sys.stdout):
                key.data.buffer.write(b"".join(prefix + piece for piece in pieces))
                key.data.flush()


def _forward(pid):
    """Pass the stop signals this supervisor gets on to the child, which runs the rank.

    They stay blocked in this process and are taken here one by one, with their sender. One
    from our parent (hydra's proxy, or slurmstepd under srun) is not passed on: the MPI
    launcher signals a rank's whole process group, so the child got its own copy (measured
    with hydra; a second SIGINT interrupted the handling of the first KeyboardInterrupt)."""
    parent = os.getppid()
    while True:
        info = signal.sigwaitinfo(FORWARDED)
        if info.si_pid == parent:
            continue
        try:
            os.kill(pid, info.si_signo)
        except ProcessLookupError:  # the child has ended
            return


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write("usage: python -m dtrain.launcher.rank (trainer CONFIG | SCRIPT ...)\n")
        return 2
    os.environ.update(rank_environment())
    rank = os.environ["RANK"]
    quiet = os.environ.get("DTRAIN_RANK0_ONLY") == "1" and rank != "0"
    record(Kind.RUNNING)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # for _forward, from now on
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        os.close(out_r)
        os.close(err_r)
        _end_child(_child(argv, out_w, err_w))
    os.close(out_w)
    os.close(err_w)
    threading.Thread(target=_forward, args=(pid,), daemon=True).start()
    _pump([(out_r, sys.stdout), (err_r, sys.stderr)], f"[rank {rank}] ".encode(), quiet,
          os.environ.get("DTRAIN_TTY") == "1")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status))
        hint = SIGNAL_HINTS.get(sig, "")
        record(Kind.SIGNAL, 128 + sig, f"killed by {sig.name}" + (f": {hint}" if hint else ""),
               pid)
        return 128 + sig
    code = os.WEXITSTATUS(status)
    if code:
        record(Kind.EXIT, code, f"exited with code {code}", pid)
    else:
        record(Kind.OK, pid=pid)
    return code


if __name__ == "__main__":
    sys.exit(main())
