"""dt.onnx.export checked by consumers dtrain did not write: onnx.checker and ONNX Runtime
give dtrain's outputs (float32, rtol 1e-5) at the traced batch size and at another one."""
import io

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.launcher import models

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _export(model, x, **kwargs):
    buf = io.BytesIO()
    dt.onnx.export(model, (x,), buf, input_names=["x"], output_names=["y"],
                   dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, **kwargs)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto, ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


def _check(model, x, x2, atol=1e-5):
    """Export with a dynamic batch axis; ONNX Runtime equals dtrain at both batch sizes."""
    training = model.training
    proto, sess = _export(model, x)
    assert model.training is training  # exported in eval mode, the flag restored
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    model.eval()
    for xi in (x, x2):
        with dt.no_grad():
            want = model(xi).numpy()
        got, = sess.run(None, {"x": xi.numpy()})
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)
    return proto


def test_mlp_with_dropout():
    model = models.mlp((1, 8, 8), 10, hidden=(32, 16), dropout=0.5, activation="gelu")
    proto = _check(model, dt.randn(3, 1, 8, 8), dt.randn(7, 1, 8, 8))
    ops = {n.op_type for n in proto.graph.node}
    assert "Gemm" in ops and "Dropout" not in ops
    assert {"1.weight", "4.bias", "7.weight"} <= {i.name for i in proto.graph.initializer}


def test_lenet():
    proto = _check(models.lenet((1, 28, 28), 10), dt.randn(2, 1, 28, 28),
                   dt.randn(5, 1, 28, 28))
    assert {"Conv", "MaxPool", "Relu"} <= {n.op_type for n in proto.graph.node}


def test_resnet20_after_training_steps():
    model = models.resnet((3, 16, 16), 10, depth=20, width=8)
    opt = dt.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # running statistics away from 0/1
        opt.zero_grad()
        nn.functional.cross_entropy(model(dt.randn(4, 3, 16, 16) * 2 + 1),
                                    dt.randint(0, 10, (4,))).backward()
        opt.step()
    _check(model, dt.randn(2, 3, 16, 16), dt.randn(3, 3, 16, 16))


def test_lstm_classifier():
    """The batch size is baked into reshapes, split sizes and the zero initial state."""
    proto = _check(models.lstm_classifier((1, 6, 5), 4, hidden_size=8, num_layers=2),
                   dt.randn(3, 1, 6, 5), dt.randn(8, 1, 6, 5))
    assert "ConstantOfShape" in {n.op_type for n in proto.graph.node}


def test_transformer_encoder():
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True,
                                       activation="gelu")
    model = nn.TransformerEncoder(layer, 2)
    proto = _check(model, dt.randn(3, 5, 16), dt.randn(6, 5, 16))
    ops = {n.op_type for n in proto.graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization"} <= ops


def test_transformer_lm_tokens():
    model = models.transformer_lm((8,), 16, d_model=16, nhead=2, num_layers=1)
    _check(model, dt.randint(0, 16, (2, 8)), dt.randint(0, 16, (5, 8)))


class Zoo(nn.Module):
    """Layers beyond the built-in models: ConvTranspose, pools, norms, activations, a GRU."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.avg = nn.AvgPool2d(2)
        self.adapt = nn.AdaptiveAvgPool2d(2)
        self.gn = nn.GroupNorm(2, 4)
        self.acts = nn.Sequential(nn.LeakyReLU(0.1), nn.ELU(), nn.Softplus(beta=2),
                                  nn.Tanh(), nn.Sigmoid())
        self.gru = nn.GRU(4, 5, batch_first=True)
        self.ln = nn.LayerNorm(5)

    def forward(self, x):
        h = self.gn(self.pool(self.up(x)))
        h = self.acts(self.adapt(h) + self.avg(h)[:, :, :2, :2] * 2 - 1)
        out, _ = self.gru(h.flatten(2).transpose(1, 2))
        return self.ln(out).log_softmax(-1).clamp(min=-3.0)


def test_more_layers_and_activations():
    _check(Zoo(), dt.randn(2, 3, 4, 4), dt.randn(3, 3, 4, 4))


class _WordLM(nn.Module):
    """The word_language_model example's RNNModel shape: forward(input, hidden) with an
    LSTM's (h, c) hidden state in and out."""

    def __init__(self):
        super().__init__()
        self.encoder, self.rnn = nn.Embedding(20, 8), nn.LSTM(8, 8)
        self.decoder = nn.Linear(8, 20)

    def forward(self, input, hidden):
        output, hidden = self.rnn(self.encoder(input), hidden)
        return self.decoder(output), hidden


def test_nested_tuple_arguments_and_outputs_are_flattened_in_order():
    dt.manual_seed(0)
    model = _WordLM().eval()
    x = dt.randint(0, 20, (5, 2))
    hidden = (dt.randn(1, 2, 8), dt.randn(1, 2, 8))
    buf = io.BytesIO()
    dt.onnx.export(model, (x, hidden), buf)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_0", "input_1", "input_2"]
    got = sess.run(None, {"input_0": x.numpy(), "input_1": hidden[0].numpy(),
                          "input_2": hidden[1].numpy()})
    with dt.no_grad():
        out, (h, c) = model(x, hidden)
    for g, want in zip(got, (out, h, c)):
        np.testing.assert_allclose(g, want.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="tensors or tuples/lists of tensors, got int"):
        dt.onnx.export(model, (x, 3), io.BytesIO())


def test_argmax_and_argmin_predictions():
    """A classifier that returns its predicted classes (int64), over a dim and over all."""
    def predict(x):
        return (x.argmax(1), x.argmin(-1, keepdim=True), x.argmax(), x.argmin(keepdim=True))
    x = dt.randn(3, 5)
    buf = io.BytesIO()
    dt.onnx.export(predict, (x,), buf)
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()), full_check=True)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for got, want in zip(sess.run(None, {"input_0": x.numpy()}), predict(x)):
        assert got.dtype == np.int64 and got.shape == tuple(want.shape)
        np.testing.assert_array_equal(got, want.numpy())


def test_op_without_mapping_is_named():
    with pytest.raises(NotImplementedError, match="op 'cumprod'"):
        dt.onnx.export(lambda x: x.cumprod(1), (dt.randn(2, 3),), io.BytesIO())


def test_structure_that_depends_on_batch_is_an_error():
    def per_row(x):
        return dt.cat([row.exp() for row in x])

    with pytest.raises(ValueError, match="changes with a dynamic axis"):
        dt.onnx.export(per_row, (dt.randn(2, 3),), io.BytesIO(), input_names=["x"],
                       dynamic_axes={"x": [0]})


def test_batch_and_sequence_axes():
    """Two dynamic axes; a size that is their product is refused, naming the problem."""
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1)
    buf = io.BytesIO()
    dt.onnx.export(model, dt.randn(2, 3, 8), buf, input_names=["x"],
                   dynamic_axes={"x": {0: "batch", 1: "length"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    model.eval()
    x = dt.randn(4, 6, 8)
    with dt.no_grad():
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], model(x).numpy(),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(NotImplementedError, match="not linear in each dynamic axis"):
        dt.onnx.export(lambda x: x.reshape(x.shape[0] * x.shape[1], -1).exp(),
                       dt.randn(2, 3, 4), io.BytesIO(), input_names=["x"],
                       dynamic_axes={"x": [0, 1]})


def test_static_export_to_path(tmp_path):
    """Without dynamic_axes every size is the traced one; `f` may be a path."""
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1))
    x = dt.randn(2, 4)
    dt.onnx.export(model, x, tmp_path / "m.onnx", opset_version=18)
    proto = onnx.load(tmp_path / "m.onnx")
    assert proto.opset_import[0].version == 18
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 4]
    got, = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                providers=["CPUExecutionProvider"]).run(
        None, {"input_0": x.numpy()})
    with dt.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_leaky_relu_mask_is_recorded_by_graph_mode():
    """The activation's `x > 0` is a registry op, so a replay uses the new input's mask."""
    f = dt.compile(nn.LeakyReLU(0.1))
    f(dt.tensor([1.0, -1.0]))
    f(dt.tensor([1.0, -1.0]))
    np.testing.assert_allclose(f(dt.tensor([-1.0, 1.0])).numpy(), [-0.1, 1.0], rtol=1e-6)
