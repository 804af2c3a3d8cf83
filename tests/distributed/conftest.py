"""`mpirun` fixture: run a script on N real MPI ranks (mpiexec) with an outer timeout."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# a shell's leftover torchrun identity would (rightly) fail init_process_group: tests that
# want these variables pass them in `env`
IDENTITY_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def _mpiexec():
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


@pytest.fixture
def mpirun(tmp_path):
    exe = _mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found (pip install dtrain[mpi])")

    def run(n, code, timeout=90, env=None, check=True):
        script = tmp_path / "rank_script.py"
        script.write_text(textwrap.dedent(code))
        inherited = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARS}
        full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run([exe, "-n", str(n), sys.executable, str(script)],
                              capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=tmp_path)
        if check and proc.returncode != 0:
            raise AssertionError(f"mpiexec -n {n} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc
    return run
