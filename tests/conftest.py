"""Shared fixtures: `device` runs a test on the CPU and, where a GPU answers, on CUDA;
`dtrain_cli` runs the real `dtrain` command line in a subprocess; `configs` is the shipped
configs folder."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dtrain as dt

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not dt.cuda.is_available(), reason="no CUDA GPU (CuPy absent or no device)"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    dt.manual_seed(0)


REPO = Path(__file__).resolve().parents[1]


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
