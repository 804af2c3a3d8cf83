"""Helpers for launcher tests: run the real `dtrain` CLI in a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dtrain_cli(tmp_path):
    def run(*args, timeout=120, env=None, cwd=None):
        # Importing scikit-learn in this process (the Digits tests) sets KMP_INIT_AT_FORK=
        # FALSE; inherited by srun ranks it breaks MPICH's PMI2 exchange on the emulated
        # cluster (seen here), so the CLI gets the environment a shell would give it.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KMP_")}
        full_env = {**clean, "PYTHONUNBUFFERED": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "dtrain.launcher", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=cwd or tmp_path)
    return run


@pytest.fixture
def configs():
    return REPO / "configs"
