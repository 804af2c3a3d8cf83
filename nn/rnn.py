"""Recurrent layers: `RNN` (tanh/relu), `LSTM`, `GRU` and their cells, with torch's
parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`, ...), gate order (LSTM i, f, g, o;
GRU r, z, n) and initialisation U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)).

A layer projects the whole input sequence with one GEMM, splits it into time steps with
`split` (one Split node whose backward concatenates the step gradients), then runs a
Python loop over time in which each step is one fused matmul for all gates plus pointwise
ops. Inputs are handled in PackedSequence's layout (time-major rows, B_t rows at step t;
a padded batch is B_t = N), so a packed batch runs each sequence only up to its length.
"""
import math

from dtrain.autograd.ops.index import index_select
from dtrain.autograd.ops.shape import cat, split, stack
from dtrain.autograd.registry import Sample, SampleMaker, register_composite
from dtrain.core import creation
from dtrain.nn import init
from dtrain.nn.dropout import dropout
from dtrain.nn.linear import linear
from dtrain.nn.module import Module
from dtrain.nn.parameter import Parameter
from dtrain.nn.utils.rnn import PackedSequence, host_indices, pack_padded_sequence


# -- one time step of each cell kind (gx: the input's projection, gates side by side) -------
def _rnn_tanh_step(gx, h, w_hh, b_hh):
    h = (gx + linear(h, w_hh, b_hh)).tanh()
    return h, h


def _rnn_relu_step(gx, h, w_hh, b_hh):
    h = (gx + linear(h, w_hh, b_hh)).relu()
    return h, h


def _lstm_step(gx, state, w_hh, b_hh):
    h, c = state
    i, f, g, o = (gx + linear(h, w_hh, b_hh)).chunk(4, -1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h = o.sigmoid() * c.tanh()
    return h, (h, c)


def _gru_step(gx, h, w_hh, b_hh):
    xr, xz, xn = gx.chunk(3, -1)
    hr, hz, hn = linear(h, w_hh, b_hh).chunk(3, -1)
    r = (xr + hr).sigmoid()
    z = (xz + hz).sigmoid()
    n = (xn + r * hn).tanh()
    h = n + z * (h - n)  # (1 - z) * n + z * h
    return h, h


_MODES = {"RNN_TANH": (_rnn_tanh_step, 1), "RNN_RELU": (_rnn_relu_step, 1),
          "LSTM": (_lstm_step, 4), "GRU": (_gru_step, 3)}


def _run_direction(step, gxs, state, w_hh, b_hh, reverse):
    """One layer in one direction over the input projections of each step, gxs[t] (B_t,
    gates) with B_t non-increasing (a PackedSequence's batch sizes; all N when not packed):
    (the outputs, packed as the inputs, final state). Only the first B_t rows step at time
    t and the rest keep their state, so each sequence ends in its state at its last step."""
    n = gxs[0]._data.shape[0]
    order = range(len(gxs) - 1, -1, -1) if reverse else range(len(gxs))
    outs = [None] * len(gxs)
    for t in order:
        b = gxs[t]._data.shape[0]
        if b == n:
            outs[t], state = step(gxs[t], state, w_hh, b_hh)
        else:
            part = tuple(s[:b] for s in state) if isinstance(state, tuple) else state[:b]
            outs[t], new = step(gxs[t], part, w_hh, b_hh)
            state = tuple(cat([a, s[b:]]) for a, s in zip(new, state)) \
                if isinstance(state, tuple) else cat([new, state[b:]])
    return cat(outs), state


class RNNBase(Module):
    """Shared by RNN, LSTM and GRU: parameters per layer and direction, the layer loop."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 device=None, dtype=None):
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if proj_size:
            raise NotImplementedError("LSTM proj_size > 0 is not supported")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, 0
        gates = _MODES[mode][1] * hidden_size
        kw = {"device": device, "dtype": dtype}
        self._names = []
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self._dirs
            for sfx in ("", "_reverse")[:self._dirs]:
                names = [f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"]
                shapes = [(gates, in_size), (gates, hidden_size)]
                if bias:
                    names += [f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"]
                    shapes += [(gates,), (gates,)]
                for name, shape in zip(names, shapes):
                    setattr(self, name, Parameter(creation.empty(*shape, **kw)))
                self._names.append(names)
        self.reset_parameters()

    @property
    def _dirs(self):
        return 2 if self.bidirectional else 1

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def _weights(self, index):
        """(w_ih, w_hh, b_ih, b_hh) of layer*directions + direction `index`."""
        ps = [getattr(self, n) for n in self._names[index]]
        return tuple(ps) if self.bias else (ps[0], ps[1], None, None)

    def _check_hidden(self, h, n, unbatched, what="hidden"):
        expected = (self.num_layers * self._dirs,) + (() if unbatched else (n,)) + \
            (self.hidden_size,)
        if tuple(h._data.shape) != expected:
            raise RuntimeError(f"Expected {what} size {expected}, got {list(h._data.shape)}")

    def flatten_parameters(self):
        """A no-op: torch packs the weights into one cuDNN buffer here; this backend runs
        the layers from the parameters as they are, so there is nothing to flatten."""

    def forward(self, input, hx=None):
        """input (L, N, in) ((N, L, in) with batch_first), unbatched (L, in), or a
        PackedSequence; returns (output of the same kind, h_n or (h_n, c_n) for LSTM)."""
        is_lstm = self.mode == "LSTM"
        packed = isinstance(input, PackedSequence)
        if packed:  # work on the packed rows; sequences stop at their own length
            x, sizes, unbatched = input.data, host_indices(input.batch_sizes).tolist(), False
            n = sizes[0]
        else:
            nd = input._data.ndim
            if nd not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got "
                                 f"{nd}D instead")
            unbatched = nd == 2
            seq = input.unsqueeze(1) if unbatched else \
                input.transpose(0, 1) if self.batch_first else input  # (L, N, in)
            steps, n = seq._data.shape[:2]
            x, sizes = seq.reshape(steps * n, seq._data.shape[-1]), [n] * steps
        if x._data.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {x._data.shape[-1]}")
        if hx is None:
            zeros = creation.zeros(self.num_layers * self._dirs, n, self.hidden_size,
                                   dtype=x.dtype, device=x.device)
            hx = (zeros, zeros) if is_lstm else zeros
        else:
            if is_lstm != isinstance(hx, (tuple, list)):
                raise TypeError(f"{type(self).__name__}: hx must be "
                                f"{'a tuple (h_0, c_0)' if is_lstm else 'a Tensor h_0'}, got "
                                f"{type(hx).__name__}")
            for h, what in zip(hx if is_lstm else (hx,), ("hidden", "cell")):
                self._check_hidden(h, n, unbatched, what)
            if unbatched:
                hx = tuple(h.unsqueeze(1) for h in hx) if is_lstm else hx.unsqueeze(1)
            elif packed and input.sorted_indices is not None:  # hx is in the caller's order
                hx = tuple(index_select(h, 1, input.sorted_indices) for h in hx) if is_lstm \
                    else index_select(hx, 1, input.sorted_indices)
        step = _MODES[self.mode][0]
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self._dirs):
                k = layer * self._dirs + d
                w_ih, w_hh, b_ih, b_hh = self._weights(k)
                state = (hx[0][k], hx[1][k]) if is_lstm else hx[k]
                gxs = split(linear(x, w_ih, b_ih), sizes)
                out, state = _run_direction(step, gxs, state, w_hh, b_hh, reverse=d == 1)
                outs.append(out)
                finals.append(state)
            x = outs[0] if len(outs) == 1 else cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = dropout(x, self.dropout)
        if packed:
            output = PackedSequence(x, input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
        else:
            x = x.reshape(steps, n, x._data.shape[-1])
            output = x.squeeze(1) if unbatched else x.transpose(0, 1) if self.batch_first else x

        def final(states):  # (num_layers * directions, N, H), layer-major as torch
            h = stack(states)
            if packed and input.unsorted_indices is not None:
                return index_select(h, 1, input.unsorted_indices)
            return h.squeeze(1) if unbatched else h
        if is_lstm:
            return output, (final([s[0] for s in finals]), final([s[1] for s in finals]))
        return output, final(finals)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None,
                 dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             "'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(f"RNN_{nonlinearity.upper()}", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, device=device, dtype=dtype)


class LSTM(RNNBase):
    """LSTM; forward(input, (h_0, c_0)) -> (output, (h_n, c_n)); gates i, f, g, o."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, device, dtype)


class GRU(RNNBase):
    """GRU; gates r, z, n with n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype)


# -- cells -----------------------------------------------------------------------------------
class RNNCellBase(Module):
    def __init__(self, mode, input_size, hidden_size, bias, device, dtype):
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, \
            hidden_size, bias
        gates = _MODES[mode][1] * hidden_size
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = Parameter(creation.empty(gates, input_size, **kw))
        self.weight_hh = Parameter(creation.empty(gates, hidden_size, **kw))
        if bias:
            self.bias_ih = Parameter(creation.empty(gates, **kw))
            self.bias_hh = Parameter(creation.empty(gates, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    reset_parameters = RNNBase.reset_parameters

    def forward(self, input, hx=None):
        is_lstm = self.mode == "LSTM"
        if input._data.ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: Expected input to be 1D or 2D, got "
                             f"{input._data.ndim}D instead")
        if input._data.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input._data.shape[-1]} "
                               f"expected {self.input_size}")
        unbatched = input._data.ndim == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            zeros = creation.zeros(x._data.shape[0], self.hidden_size, dtype=input.dtype,
                                   device=input.device)
            hx = (zeros, zeros) if is_lstm else zeros
        elif unbatched:
            hx = tuple(h.unsqueeze(0) for h in hx) if is_lstm else hx.unsqueeze(0)
        gx = linear(x, self.weight_ih, self.bias_ih)
        _, state = _MODES[self.mode][0](gx, hx, self.weight_hh, self.bias_hh)
        if unbatched:
            return tuple(s.squeeze(0) for s in state) if is_lstm else state.squeeze(0)
        return state

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.mode.startswith("RNN_") and self.mode != "RNN_TANH":
            s += ", nonlinearity='relu'"
        return s


class RNNCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__(f"RNN_{nonlinearity.upper()}", input_size, hidden_size, bias, device,
                         dtype)


class LSTMCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)


class GRUCell(RNNCellBase):
    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)


def _rnn_samples():
    s = SampleMaker("rnn_layers")
    lstm = LSTM(2, 2, num_layers=2, bidirectional=True).double()
    gru = GRU(2, 3, batch_first=True).double()
    rnn = RNN(2, 2, nonlinearity="relu").double()
    cell = LSTMCell(2, 2).double()
    packed = LSTM(2, 2, bidirectional=True).double()
    for m in (lstm, gru, rnn, cell, packed):
        m.requires_grad_(False)  # inputs and states are checked; weights go through linear
    return [Sample(lambda x, h, c: lstm(x, (h, c))[0], (s(3, 1, 2), s(4, 1, 2), s(4, 1, 2))),
            Sample(lambda x, h: gru(x, h)[1], (s(2, 3, 2), s(1, 2, 3))),
            Sample(lambda x: rnn(x)[0], (s.away(3, 2, 2),)),
            Sample(lambda x, h, c: cell(x, (h, c))[1], (s(2, 2), s(2, 2), s(2, 2))),
            Sample(lambda x, h, c: packed(pack_padded_sequence(x, [1, 3], enforce_sorted=False),
                                          (h, c))[1][1], (s(3, 2, 2), s(2, 2, 2), s(2, 2, 2))),
            Sample(lambda x: packed(pack_padded_sequence(x, [3, 2]))[0].data, (s(3, 2, 2),))]


register_composite("rnn_layers", _rnn_samples)
