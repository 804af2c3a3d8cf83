"""Process-wide switches (matmul precision, determinism, threads) and dt.testing.assert_close,
as PyTorch scripts call them."""
import numpy as np
import pytest

import dtrain as dt


def test_switches_record_what_scripts_set():
    assert dt.get_float32_matmul_precision() == "highest"
    dt.set_float32_matmul_precision("high")
    try:
        assert dt.get_float32_matmul_precision() == "high"
        with pytest.raises(RuntimeError, match="Invalid float32 matmul precision 'fast'"):
            dt.set_float32_matmul_precision("fast")
    finally:
        dt.set_float32_matmul_precision("highest")
    dt.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert dt.are_deterministic_algorithms_enabled()
        assert dt.is_deterministic_algorithms_warn_only_enabled()
    finally:
        dt.use_deterministic_algorithms(False)
    assert not dt.are_deterministic_algorithms_enabled()


def test_set_num_threads_limits_the_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = dt.get_num_threads()
    dt.set_num_threads(1)
    try:
        assert dt.get_num_threads() == 1
        blas = [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i.get("user_api") == "blas"]
        assert blas and all(n == 1 for n in blas)
    finally:
        dt.set_num_threads(before)
    with pytest.raises(RuntimeError, match="positive integer"):
        dt.set_num_threads(0)
    assert dt.get_num_interop_threads() == 1


def test_assert_close_passes_within_dtype_tolerances():
    dt.testing.assert_close(dt.tensor([1.0, 2.0]), dt.tensor([1.0, 2.0 + 2e-6]))
    dt.testing.assert_close({"a": [1.0, dt.ones(2, dtype=dt.int64)]},
                            {"a": [1.0, dt.ones(2, dtype=dt.int64)]})
    dt.testing.assert_close(dt.tensor([np.nan]), dt.tensor([np.nan]), equal_nan=True)
    dt.testing.assert_close(dt.tensor([1.0]), dt.tensor([1.5]), rtol=0.0, atol=0.5)


def test_assert_close_reports_like_pytorch():
    with pytest.raises(AssertionError) as err:
        dt.testing.assert_close(dt.tensor([1.0, 2.0, 3.0]), dt.tensor([1.0, 2.5, 3.0]))
    assert str(err.value).splitlines() == [
        "Tensor-likes are not close!", "",
        "Mismatched elements: 1 / 3 (33.3%)",
        "Greatest absolute difference: 0.5 at index (1,) (up to 1e-05 allowed)",
        "Greatest relative difference: 0.2 at index (1,) (up to 1.3e-06 allowed)"]
    with pytest.raises(AssertionError, match="attribute 'dtype' do not match"):
        dt.testing.assert_close(dt.ones(2), dt.ones(2, dtype=dt.float64))
    dt.testing.assert_close(dt.ones(2), dt.ones(2, dtype=dt.float64), check_dtype=False)
    with pytest.raises(AssertionError, match="attribute 'shape' do not match"):
        dt.testing.assert_close(dt.ones(2), dt.ones(3))
    with pytest.raises(AssertionError, match="custom"):
        dt.testing.assert_close(1, 2, msg="custom")
    with pytest.raises(ValueError, match="Both 'rtol' and 'atol'"):
        dt.testing.assert_close(1.0, 1.0, rtol=0.1)
