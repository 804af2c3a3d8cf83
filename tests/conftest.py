"""Shared fixtures: `device` runs a test on the CPU and, where a GPU answers, on CUDA."""
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
