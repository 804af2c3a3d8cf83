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
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "dtrain.launcher", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=cwd or tmp_path)
    return run


@pytest.fixture
def configs():
    return REPO / "configs"
