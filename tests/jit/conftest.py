import tracemalloc

import pytest


def _extra_peak(fn):
    """Peak traced memory (NumPy arrays and Python objects) above the start of one call of
    `fn`, measured with tracemalloc."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.fixture
def extra_peak():
    return _extra_peak
