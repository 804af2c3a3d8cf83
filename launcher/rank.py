"""Per-rank supervisor: `python -m dtrain.launcher.rank TARGET...` (started by mpiexec/srun).

It sets the rank's environment, runs the target in a child process whose output it prefixes
with `[rank k]`, and records how the rank ended in the launcher's control directory: the
traceback of an uncaught exception, or the signal that killed it. The launcher reads these
records to stop the whole job at once and to print the root cause.
"""
import atexit
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from dtrain.launcher.identity import rank_environment

SIGNAL_HINTS = {signal.SIGKILL: "out of memory, or killed by the scheduler?",
                signal.SIGSEGV: "a crash in native code?", signal.SIGTERM: "terminated"}


def record(kind, text, code):
    """Write this rank's end record into the control directory (first record wins)."""
    control = os.environ.get("DTRAIN_CONTROL_DIR")
    if not control:
        return
    path = Path(control) / f"rank_{os.environ.get('RANK', '0')}.json"
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": int(os.environ.get("RANK", "0")),
                               "host": socket.gethostname(), "pid": os.getpid(),
                               "kind": kind, "text": text, "code": code,
                               "time": time.time()}))
    os.replace(tmp, path)


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
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    try:
        code = run_target(argv) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            record("exit", f"exited with code {code} (SystemExit)", code)
    except BaseException:  # the rank's failure: keep its traceback for the root-cause report
        text = traceback.format_exc()
        sys.stderr.write(text)
        record("exception", text, 1)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _pump(pipes, prefix, quiet_stdout):
    """Copy the child's output line by line with the rank prefix until both pipes close."""
    sel = selectors.DefaultSelector()
    partial = {}
    for fd, dest in pipes:
        sel.register(fd, selectors.EVENT_READ, dest)
        partial[fd] = b""
    open_fds = len(pipes)
    while open_fds:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            dest = key.data
            if not chunk:
                sel.unregister(key.fd)
                open_fds -= 1
                if partial[key.fd]:
                    _emit(dest, prefix, partial[key.fd] + b"\n", quiet_stdout)
                continue
            data = partial[key.fd] + chunk
            lines = data.split(b"\n")
            partial[key.fd] = lines.pop()
            if lines:
                _emit(dest, prefix, b"".join(line + b"\n" for line in lines), quiet_stdout)


def _emit(dest, prefix, data, quiet_stdout):
    if quiet_stdout and dest is sys.stdout:
        return
    out = b"".join(prefix + line + b"\n" for line in data.split(b"\n")[:-1])
    dest.buffer.write(out)
    dest.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write("usage: python -m dtrain.launcher.rank (trainer CONFIG | SCRIPT ...)\n")
        return 2
    os.environ.update(rank_environment())
    rank = os.environ["RANK"]
    quiet = os.environ.get("DTRAIN_RANK0_ONLY") == "1" and rank != "0"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        code = _child(argv, out_w, err_w)
        atexit._run_exitfuncs()  # e.g. mpi4py's MPI_Finalize; os._exit skips them
        os._exit(code if isinstance(code, int) else 1)
    os.close(out_w)
    os.close(err_w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda s, f: os.kill(pid, s))
    _pump([(out_r, sys.stdout), (err_r, sys.stderr)], f"[rank {rank}] ".encode(), quiet)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status))
        hint = SIGNAL_HINTS.get(sig, "")
        record("signal", f"killed by {sig.name}" + (f": {hint}" if hint else ""), 128 + sig)
        return 128 + sig
    code = os.WEXITSTATUS(status)
    if code:
        record("exit", f"exited with code {code}", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
