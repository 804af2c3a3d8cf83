"""nn.utils.rnn: pad_sequence, pack_padded_sequence / pad_packed_sequence / pack_sequence
layouts and errors, and recurrent layers on a PackedSequence equal to running each sequence
alone, unpadded (outputs, final states and gradients, float64)."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
from dtrain.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    pad_sequence,
)

RNG = np.random.default_rng(0)


def arr(t):
    return t.detach().numpy()


def seqs(lengths, features=3):
    return [dt.tensor(RNG.standard_normal((n, features)), requires_grad=True) for n in lengths]


def test_pad_sequence_sides_and_layouts():
    a, b = dt.tensor([[1.0], [2.0], [3.0]]), dt.tensor([[4.0]])
    assert pad_sequence([a, b]).tolist() == [[[1.0], [4.0]], [[2.0], [0.0]], [[3.0], [0.0]]]
    out = pad_sequence([a, b], batch_first=True, padding_value=-1.0, padding_side="left")
    assert out.tolist() == [[[1.0], [2.0], [3.0]], [[-1.0], [-1.0], [4.0]]]
    with pytest.raises(ValueError, match="padding_side"):
        pad_sequence([a, b], padding_side="middle")


def test_pack_padded_layout_and_round_trip():
    padded = dt.tensor([[1.0, 4.0, 6.0], [2.0, 5.0, 0.0], [3.0, 0.0, 0.0]])  # (T, B)
    packed = pack_padded_sequence(padded, [3, 2, 1])
    assert packed.data.tolist() == [1.0, 4.0, 6.0, 2.0, 5.0, 3.0]
    assert packed.batch_sizes.tolist() == [3, 2, 1] and packed.batch_sizes.dtype == dt.int64
    assert packed.sorted_indices is None and packed.unsorted_indices is None
    out, lengths = pad_packed_sequence(packed, padding_value=9.0, total_length=4)
    assert out.tolist() == [[1.0, 4.0, 6.0], [2.0, 5.0, 9.0], [3.0, 9.0, 9.0], [9.0] * 3]
    assert lengths.tolist() == [3, 2, 1]
    with pytest.raises(ValueError, match="total_length=2"):
        pad_packed_sequence(packed, total_length=2)


def test_enforce_sorted_errors_and_unsorted_round_trip():
    padded = dt.tensor(RNG.standard_normal((3, 4, 2)))  # batch_first (B=3, T=4)
    with pytest.raises(RuntimeError, match="sorted in decreasing order"):
        pack_padded_sequence(padded, [2, 4, 1], batch_first=True)
    with pytest.raises(RuntimeError, match="greater than 0"):
        pack_padded_sequence(padded, [2, 0, 1], batch_first=True, enforce_sorted=False)
    with pytest.raises(RuntimeError, match="batch_size"):
        pack_padded_sequence(padded, [2, 1], batch_first=True)
    packed = pack_padded_sequence(padded, [2, 4, 1], batch_first=True, enforce_sorted=False)
    assert packed.sorted_indices.tolist() == [1, 0, 2]
    assert packed.unsorted_indices.tolist() == [1, 0, 2]
    assert packed.batch_sizes.tolist() == [3, 2, 1, 1]
    out, lengths = pad_packed_sequence(packed, batch_first=True)
    assert lengths.tolist() == [2, 4, 1]
    expect = padded.numpy().copy()
    expect[0, 2:] = expect[2, 1:] = 0.0
    np.testing.assert_array_equal(out.numpy(), expect)
    ss = seqs([1, 3, 2])
    packed = pack_sequence(ss, enforce_sorted=False)
    assert packed.sorted_indices.tolist() == [1, 2, 0]
    assert packed.unsorted_indices.tolist() == [2, 0, 1]
    with pytest.raises(RuntimeError, match="enforce_sorted=False"):
        pack_sequence(ss)


def test_gradients_flow_through_packing():
    ss = seqs([2, 3])
    packed = pack_sequence(ss, enforce_sorted=False)
    out, _ = pad_packed_sequence(packed, batch_first=True)
    (out * dt.tensor(np.arange(18.0).reshape(2, 3, 3))).sum().backward()
    np.testing.assert_array_equal(ss[0].grad.numpy(), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(ss[1].grad.numpy(), np.arange(9.0, 18.0).reshape(3, 3))


@pytest.mark.parametrize("kind,bidirectional,num_layers",
                         [("LSTM", False, 1), ("LSTM", True, 2), ("GRU", True, 1),
                          ("RNN", False, 2)])
def test_packed_rnn_equals_each_sequence_alone(kind, bidirectional, num_layers):
    dt.manual_seed(0)
    rnn = getattr(nn, kind)(3, 4, num_layers=num_layers, bidirectional=bidirectional,
                            batch_first=True).double()
    lengths = [2, 5, 1, 4]
    ss = seqs(lengths)
    states = num_layers * (2 if bidirectional else 1)
    h0 = dt.tensor(RNG.standard_normal((states, 4, 4)), requires_grad=True)
    c0 = dt.tensor(RNG.standard_normal((states, 4, 4)), requires_grad=True)
    hx = (h0, c0) if kind == "LSTM" else h0
    packed = pack_padded_sequence(pad_sequence(ss, batch_first=True), lengths,
                                  batch_first=True, enforce_sorted=False)
    out, hn = rnn(packed, hx)
    assert isinstance(out, PackedSequence)
    padded, out_lengths = pad_packed_sequence(out, batch_first=True)
    assert out_lengths.tolist() == lengths and padded.shape == (4, 5, 4 * (1 + bidirectional))
    finals = hn if kind == "LSTM" else (hn,)
    weight = dt.tensor(RNG.standard_normal(padded.shape))
    ((padded * weight).sum() + sum((f * f).sum() for f in finals)).backward()
    got = [arr(s.grad) for s in ss] + [arr(h0.grad)] + \
        ([arr(c0.grad)] if kind == "LSTM" else []) + [arr(p.grad) for p in rnn.parameters()]
    rnn.zero_grad()
    total = 0.0
    refs = [dt.tensor(arr(s), requires_grad=True) for s in ss]
    h0r = dt.tensor(arr(h0), requires_grad=True)
    c0r = dt.tensor(arr(c0), requires_grad=True)
    for b, (s, n) in enumerate(zip(refs, lengths)):
        state = (h0r[:, b], c0r[:, b]) if kind == "LSTM" else h0r[:, b]
        o, f = rnn(s, state)  # unbatched, unpadded
        np.testing.assert_allclose(arr(padded[b, :n]), arr(o), rtol=0, atol=1e-12)
        assert np.all(arr(padded[b, n:]) == 0.0)
        for got_f, ref_f in zip(finals, f if kind == "LSTM" else (f,)):
            np.testing.assert_allclose(arr(got_f[:, b]), arr(ref_f), rtol=0, atol=1e-12)
            total = total + (ref_f * ref_f).sum()
        total = total + (o * weight[b, :n]).sum()
    total.backward()
    want = [arr(s.grad) for s in refs] + [arr(h0r.grad)] + \
        ([arr(c0r.grad)] if kind == "LSTM" else []) + [arr(p.grad) for p in rnn.parameters()]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_flatten_parameters_is_a_no_op():
    lstm = nn.LSTM(2, 3)
    before = {k: v.numpy().copy() for k, v in lstm.state_dict().items()}
    assert lstm.flatten_parameters() is None
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in lstm.state_dict().items())


def test_packed_sequence_to_dtype():
    packed = pack_sequence(seqs([1, 2]), enforce_sorted=False).to(dt.float32)
    assert packed.data.dtype == dt.float32 and packed.sorted_indices.tolist() == [1, 0]
    assert packed.batch_sizes.tolist() == [2, 1]
