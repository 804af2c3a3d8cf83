"""dtype introspection (finfo, iinfo, promote_types, result_type, can_cast, bfloat16),
tensor predicates and metadata, and set_printoptions."""
import numpy as np
import pytest

import dtrain as dt


def test_finfo_matches_the_ieee_limits():
    f32 = dt.finfo(dt.float32)
    assert (f32.bits, f32.dtype) == (32, "float32")
    assert f32.eps == 2.0 ** -23 and f32.max == float(np.finfo(np.float32).max)
    assert f32.min == -f32.max and f32.tiny == f32.smallest_normal == 2.0 ** -126
    assert f32.resolution == 1e-06
    f16 = dt.finfo(dt.half)
    assert (f16.bits, f16.eps, f16.max, f16.tiny, f16.resolution) == (16, 2.0 ** -10, 65504.0,
                                                                      2.0 ** -14, 0.001)
    assert dt.finfo().dtype == "float32" and dt.finfo(dt.float64).eps == 2.0 ** -52
    assert repr(f32).startswith("finfo(resolution=1e-06, min=-3.40282e+38, max=3.40282e+38")
    with pytest.raises(TypeError, match="floating point input type. Use iinfo"):
        dt.finfo(dt.int32)


def test_iinfo_matches_the_integer_limits():
    assert (dt.iinfo(dt.int8).min, dt.iinfo(dt.int8).max, dt.iinfo(dt.int8).bits) == (-128, 127, 8)
    assert dt.iinfo(dt.uint8).max == 255 and dt.iinfo(dt.int64).max == 2 ** 63 - 1
    assert dt.iinfo(dt.int32).dtype == "int32"
    assert repr(dt.iinfo(dt.int16)) == "iinfo(min=-32768, max=32767, dtype=int16)"
    with pytest.raises(TypeError, match="not supported by iinfo"):
        dt.iinfo(dt.float32)


def test_promote_types_and_can_cast_follow_categories():
    assert dt.promote_types(dt.int64, dt.float16) == dt.float16
    assert dt.promote_types(dt.uint8, dt.int8) == dt.int16
    assert dt.promote_types(dt.float32, dt.float64) == dt.float64
    assert dt.promote_types(dt.bool, dt.int32) == dt.int32
    assert dt.can_cast(dt.int8, dt.float16) and dt.can_cast(dt.float64, dt.float16)
    assert not dt.can_cast(dt.float32, dt.int32) and not dt.can_cast(dt.int64, dt.bool)


def test_result_type_ranks_tensors_above_zero_dim_above_numbers():
    ints = dt.tensor([1, 2], dtype=dt.int8)
    assert dt.result_type(ints, 1000) == dt.int8
    assert dt.result_type(ints, 2.5) == dt.float32
    assert dt.result_type(ints, dt.tensor(1000)) == dt.int8  # a 0-d int does not widen
    assert dt.result_type(ints, dt.tensor(1.0, dtype=dt.float64)) == dt.float64  # category
    assert dt.result_type(dt.tensor([1.0], dtype=dt.float16), dt.tensor(1.0, dtype=dt.float64)) \
        == dt.float16
    assert dt.result_type(2, 3) == dt.int64 and dt.result_type(True, 2.0) == dt.float32
    assert dt.result_type(ints, dt.tensor([1], dtype=dt.uint8)) == dt.int16
    with pytest.raises(TypeError, match="expected a Tensor or a Python number"):
        dt.result_type(ints, "a")


def test_bfloat16_is_named_but_every_use_says_it_is_unsupported():
    assert repr(dt.bfloat16) == "dtrain.bfloat16" and dt.bfloat16.is_floating_point
    for use in (lambda: dt.zeros(2, dtype=dt.bfloat16), lambda: dt.ones(2).to(dt.bfloat16),
                lambda: dt.ones(2).to("bfloat16"), lambda: dt.finfo(dt.bfloat16)):
        with pytest.raises(TypeError, match="bfloat16 is not supported"):
            use()


def test_predicates_and_metadata():
    x = dt.arange(12.0).reshape(3, 4)
    assert dt.is_tensor(x) and not dt.is_tensor(x.numpy())
    assert dt.is_floating_point(x) and not dt.is_floating_point(dt.arange(3))
    assert not dt.is_complex(x) and not x.is_complex() and dt.numel(x) == 12
    assert x.stride() == (4, 1) and x.t().stride() == (1, 4) and x.stride(-2) == 4
    assert x[1:, 1:].storage_offset() == 5 and x.storage_offset() == 0
    assert x[:, 2].storage_offset() == 2
    assert (x.nbytes, x.itemsize, x.element_size()) == (48, 4, 4)
    assert x.char().dtype == dt.int8 and x.short().dtype == dt.int16
    np.testing.assert_array_equal(x.short().numpy(), np.arange(12).reshape(3, 4))
    assert x.share_memory_() is x and x.pin_memory() is x and not x.is_pinned()


def test_set_printoptions_profiles_and_sci_mode():
    x = dt.tensor([1.123456, 3.0])
    try:
        dt.set_printoptions(precision=2)
        assert repr(x) == "tensor([1.12, 3.00])"
        dt.set_printoptions(sci_mode=True)
        assert repr(x) == "tensor([1.12e+00, 3.00e+00])"
        dt.set_printoptions(profile="default")
        assert repr(x) == "tensor([1.1235, 3.0000])"
        assert repr(dt.tensor([1e9, 1.0])) == "tensor([1.0000e+09, 1.0000e+00])"
        dt.set_printoptions(sci_mode=False)
        assert repr(dt.tensor([0.001, 1000.0])) == "tensor([   0.0010, 1000.0000])"
        assert "..." in repr(dt.arange(2000))
        dt.set_printoptions(threshold=5, edgeitems=1)
        assert repr(dt.arange(10)) == "tensor([0, ..., 9])"
        dt.set_printoptions(profile="full")
        assert "..." not in repr(dt.arange(2000))
        dt.set_printoptions(profile="short")
        assert repr(x) == "tensor([1.12, 3.00])"
        with pytest.raises(ValueError, match="unknown profile 'long'"):
            dt.set_printoptions(profile="long")
    finally:
        dt.set_printoptions(profile="default")
