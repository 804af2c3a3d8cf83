"""RNN, LSTM, GRU and their cells against a step-by-step NumPy reference using the same
weights (torch's gate order), shapes of multi-layer / bidirectional / batch_first runs,
parameter names, and an LSTM that learns to recall the first element of a sequence."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F

RNG = np.random.default_rng(0)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def ref_cell(mode, x, state, w_ih, w_hh, b_ih, b_hh):
    """One step of torch's equations; returns the new state (h, or (h, c) for LSTM)."""
    if mode == "LSTM":
        h, c = state
        gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = np.split(gates, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c
    if mode == "GRU":
        xr, xz, xn = np.split(x @ w_ih.T + b_ih, 3, axis=-1)
        hr, hz, hn = np.split(state @ w_hh.T + b_hh, 3, axis=-1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        return (1 - z) * n + z * state
    act = np.tanh if mode == "RNN_TANH" else (lambda v: np.maximum(v, 0))
    return act(x @ w_ih.T + b_ih + state @ w_hh.T + b_hh)


def ref_rnn(module, mode, x, h0, c0=None):
    """Layer by layer, direction by direction, time step by time step. x: (L, N, in)."""
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    dirs = 2 if module.bidirectional else 1
    finals_h, finals_c = [], []
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            k = layer * dirs + d
            state = (h0[k], c0[k]) if mode == "LSTM" else h0[k]
            hs = [None] * len(x)
            for t in (reversed(range(len(x))) if d else range(len(x))):
                state = ref_cell(mode, x[t], state, sd["weight_ih" + sfx], sd["weight_hh" + sfx],
                                 sd.get("bias_ih" + sfx, 0), sd.get("bias_hh" + sfx, 0))
                hs[t] = state[0] if mode == "LSTM" else state
            outs.append(np.stack(hs))
            finals_h.append(state[0] if mode == "LSTM" else state)
            if mode == "LSTM":
                finals_c.append(state[1])
        x = np.concatenate(outs, -1)
    return x, np.stack(finals_h), (np.stack(finals_c) if mode == "LSTM" else None)


CASES = [("RNN", "RNN_TANH", {}), ("RNN", "RNN_RELU", {"nonlinearity": "relu"}),
         ("LSTM", "LSTM", {"num_layers": 2, "bidirectional": True}),
         ("GRU", "GRU", {"num_layers": 2, "bidirectional": True}),
         ("LSTM", "LSTM", {"bias": False, "batch_first": True}),
         ("GRU", "GRU", {"num_layers": 3, "batch_first": True})]


@pytest.mark.parametrize("cls, mode, kw", CASES)
def test_matches_step_by_step_reference(cls, mode, kw):
    module = getattr(nn, cls)(3, 4, **kw).double()
    layers, dirs = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    x = RNG.standard_normal((5, 2, 3))
    h0, c0 = RNG.standard_normal((2, layers * dirs, 2, 4))
    xin = x.transpose(1, 0, 2) if kw.get("batch_first") else x
    if mode == "LSTM":
        out, (hn, cn) = module(dt.tensor(xin), (dt.tensor(h0), dt.tensor(c0)))
    else:
        out, hn = module(dt.tensor(xin), dt.tensor(h0))
    ref_out, ref_h, ref_c = ref_rnn(module, mode, x, h0, c0)
    if kw.get("batch_first"):
        ref_out = ref_out.transpose(1, 0, 2)
    assert out.shape == ref_out.shape == (*xin.shape[:2], 4 * dirs)
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hn.detach().numpy(), ref_h, rtol=1e-10, atol=1e-12)
    if mode == "LSTM":
        np.testing.assert_allclose(cn.detach().numpy(), ref_c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls, mode", [("RNNCell", "RNN_TANH"), ("LSTMCell", "LSTM"),
                                       ("GRUCell", "GRU")])
def test_cells_match_reference(cls, mode):
    cell = getattr(nn, cls)(3, 5).double()
    sd = {k: v.numpy() for k, v in cell.state_dict().items()}
    x, h, c = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 5)), RNG.standard_normal((2, 5))
    state = (h, c) if mode == "LSTM" else h
    ref = ref_cell(mode, x, state, sd["weight_ih"], sd["weight_hh"], sd["bias_ih"],
                   sd["bias_hh"])
    got = cell(dt.tensor(x), tuple(dt.tensor(v) for v in state) if mode == "LSTM"
               else dt.tensor(state))
    for g, r in zip(got if mode == "LSTM" else (got,), ref if mode == "LSTM" else (ref,)):
        np.testing.assert_allclose(g.detach().numpy(), r, rtol=1e-10)
    unbatched = cell(dt.tensor(x[0]))
    assert (unbatched[0] if mode == "LSTM" else unbatched).shape == (5,)


def test_parameter_names_shapes_and_init():
    lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    names = [(n, tuple(p.shape)) for n, p in lstm.named_parameters()]
    assert names[:4] == [("weight_ih_l0", (20, 3)), ("weight_hh_l0", (20, 5)),
                         ("bias_ih_l0", (20,)), ("bias_hh_l0", (20,))]
    assert names[4][0] == "weight_ih_l0_reverse"
    assert ("weight_ih_l1", (20, 10)) in names and len(names) == 16
    bound = 1 / np.sqrt(5)
    assert all(np.abs(p.detach().numpy()).max() <= bound for p in lstm.parameters())
    assert [n for n, _ in nn.GRU(2, 3, bias=False).named_parameters()] == ["weight_ih_l0",
                                                                           "weight_hh_l0"]
    assert tuple(nn.GRU(2, 3).weight_hh_l0.shape) == (9, 3)
    assert repr(lstm) == "LSTM(3, 5, num_layers=2, bidirectional=True)"


def test_shapes_defaults_and_errors():
    gru = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    out, h = gru(dt.randn(6, 7, 3))
    assert out.shape == (6, 7, 8) and h.shape == (4, 6, 4)
    out, h = gru(dt.randn(7, 3))  # unbatched
    assert out.shape == (7, 8) and h.shape == (4, 4)
    lstm = nn.LSTM(3, 4)
    out, (h, c) = lstm(dt.randn(5, 2, 3))
    assert out.shape == (5, 2, 4) and h.shape == c.shape == (1, 2, 4)
    np.testing.assert_allclose(out[-1].detach().numpy(), h[0].detach().numpy())
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 2, 4\)"):
        lstm(dt.randn(5, 2, 3), (dt.zeros(2, 2, 4), dt.zeros(1, 2, 4)))
    with pytest.raises(RuntimeError, match="input_size"):
        lstm(dt.randn(5, 2, 6))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(2, 3, nonlinearity="gelu")


def test_dropout_between_layers_only_in_training():
    rnn = nn.RNN(3, 8, num_layers=2, dropout=0.5)
    x = dt.randn(4, 2, 3)
    a, b = rnn(x)[0].detach().numpy(), rnn(x)[0].detach().numpy()
    assert not np.allclose(a, b)
    rnn.eval()
    np.testing.assert_array_equal(rnn(x)[0].detach().numpy(), rnn(x)[0].detach().numpy())


def test_gradients_reach_inputs_states_and_every_weight():
    lstm = nn.LSTM(2, 3, num_layers=2, bidirectional=True).double()
    x = dt.tensor(RNG.standard_normal((4, 2, 2)), requires_grad=True)
    h0 = dt.tensor(RNG.standard_normal((4, 2, 3)), requires_grad=True)
    out, (hn, cn) = lstm(x, (h0, dt.zeros(4, 2, 3, dtype=dt.float64)))
    (out.sum() + hn.sum() + cn.sum()).backward()
    assert x.grad.shape == x.shape and h0.grad.shape == h0.shape
    assert all(p.grad is not None and np.abs(p.grad.numpy()).sum() > 0
               for p in lstm.parameters())


def test_lstm_learns_to_recall_the_first_element():
    """Class = sign of the first step's value; 7 noise steps follow."""
    dt.manual_seed(0)
    rng = np.random.default_rng(0)

    def batch(n):
        x = rng.normal(0, 1, (8, n, 1)).astype(np.float32)
        return x, (x[0, :, 0] > 0).astype(np.int64)
    lstm, head = nn.LSTM(1, 16), nn.Linear(16, 2)
    opt = dt.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=0.03)
    for _ in range(200):
        x, y = batch(32)
        opt.zero_grad()
        _, (h, _) = lstm(dt.tensor(x))
        F.cross_entropy(head(h[0]), dt.tensor(y)).backward()
        opt.step()
    x, y = batch(500)
    with dt.no_grad():
        _, (h, _) = lstm(dt.tensor(x))
        acc = (head(h[0]).argmax(1).numpy() == y).mean()
    assert acc >= 0.95
