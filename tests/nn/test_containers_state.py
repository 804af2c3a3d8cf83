"""Containers, state-dict round trips and loading messages, freezing, hooks, copies and
`dt.nn.utils`."""
import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
from dtrain.nn.utils import (
    clip_grad_norm_,
    clip_grad_value_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(8, 3))


def test_sequential_forms_indexing_and_slicing():
    net = mlp()
    assert len(net) == 5 and isinstance(net[0], nn.Linear) and isinstance(net[-1], nn.Linear)
    head = net[:2]
    assert isinstance(head, nn.Sequential) and list(head._modules) == ["0", "1"]
    assert head[0] is net[0]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 3)), ("act", nn.Tanh())]))
    assert [k for k, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    assert named[1:][0] is named.act and list(named[1:]._modules) == ["act"]
    x = dt.randn(5, 2)
    np.testing.assert_allclose(named(x).detach().numpy(), named.fc(x).tanh().detach().numpy())
    net[3] = nn.Identity()
    assert isinstance(net[3], nn.Identity)
    del net[1]
    assert list(net._modules) == ["0", "1", "2", "3"] and isinstance(net[1], nn.ReLU)
    net.append(nn.Softmax(-1))
    assert net(dt.randn(2, 4)).sum(-1).tolist() == pytest.approx([1, 1], rel=1e-6)
    net.insert(0, nn.Identity())
    assert isinstance(net[0], nn.Identity) and len(net) == 6
    assert isinstance(net.pop(0), nn.Identity) and len(net) == 5
    with pytest.raises(IndexError, match="out of range"):
        net[7]


def test_module_list_and_dict():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.append(nn.ReLU())
    layers += [nn.Tanh()]
    assert len(layers) == 5 and isinstance(layers[-1], nn.Tanh)
    assert len(list(layers.parameters())) == 6
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    with pytest.raises(NotImplementedError):
        layers(dt.randn(2))

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Linear(3, 1)})
            self.scales = nn.ParameterList([nn.Parameter(dt.ones(3)), dt.zeros(1)])
            self.extra = nn.ParameterDict({"alpha": nn.Parameter(dt.tensor(0.5))})

    h = Holder()
    assert list(h.state_dict()) == ["blocks.a.weight", "blocks.a.bias", "blocks.b.weight",
                                    "blocks.b.bias", "scales.0", "scales.1", "extra.alpha"]
    assert isinstance(h.scales[1], nn.Parameter) and h.scales[1].requires_grad
    assert "a" in h.blocks and list(h.blocks.keys()) == ["a", "b"]
    h.blocks["c"] = nn.ReLU()
    assert [k for k, _ in h.blocks.items()] == ["a", "b", "c"]
    del h.blocks["c"]
    h.extra["beta"] = dt.ones(2)
    assert [k for k, _ in h.named_parameters()][-2:] == ["extra.alpha", "extra.beta"]
    assert len(h.scales) == 2 and [p.shape for p in h.scales] == [(3,), (1,)]
    assert "ParameterList" in repr(h) and "of size 3" in repr(h)


def test_state_dict_round_trip_and_strict_messages():
    a, b = mlp(), mlp()
    a.train()
    a(dt.randn(16, 4))  # running stats and num_batches_tracked move
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                        "1.running_var", "1.num_batches_tracked", "4.weight", "4.bias"]
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy())
    a.eval()
    b.eval()
    x = dt.randn(3, 4)
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())

    bad = dict(sd)
    del bad["0.bias"]
    bad["head.weight"] = dt.zeros(1)
    bad["4.weight"] = dt.zeros(2, 8)
    with pytest.raises(RuntimeError) as err:
        b.load_state_dict(bad)
    msg = str(err.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "head.weight"' in msg
    assert "size mismatch for 4.weight: copying a param with shape [2, 8]" in msg

    # transfer learning: load a backbone, keep a new head
    backbone = {k: v for k, v in sd.items() if not k.startswith("4.")}
    backbone["fc.weight"] = dt.zeros(1)
    res = b.load_state_dict(backbone, strict=False)
    assert res.missing_keys == ["4.weight", "4.bias"] and res.unexpected_keys == ["fc.weight"]


def test_replacing_a_layer_keeps_its_position():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 2)
            self.register_buffer("scale", dt.ones(1))

    net = Net()
    keys = list(net.state_dict())
    net.body = nn.Linear(4, 4)  # a transfer-learning style swap
    net.scale = dt.zeros(1)
    # own entries first, then the children's (torch's order)
    assert list(net.state_dict()) == keys == ["scale", "body.weight", "body.bias", "fc.weight",
                                              "fc.bias"]


def test_freezing_gives_no_gradients():
    net = mlp()
    net[0].requires_grad_(False)
    out = net(dt.randn(6, 4)).sum()
    out.backward()
    assert net[0].weight.grad is None and net[0].bias.grad is None
    assert net[4].weight.grad is not None and net[1].weight.grad is not None
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_train_eval_flags_hooks_and_copies():
    net = mlp()
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    seen = []
    handle = net[0].register_forward_hook(lambda m, args, out: seen.append(out.shape) or out * 0)
    pre = net.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    out = net(dt.randn(2, 4))
    assert seen == [(2, 8)]
    np.testing.assert_allclose(out.detach().numpy(), np.broadcast_to(net[4].bias.numpy(force=True),
                                                                     (2, 3)), rtol=1e-6)
    handle.remove()
    pre.remove()
    twin = copy.deepcopy(net)
    assert all(isinstance(p, nn.Parameter) for p in twin.parameters())
    assert twin[0].weight._data is not net[0].weight._data
    np.testing.assert_array_equal(twin[0].weight.detach().numpy(), net[0].weight.detach().numpy())
    again = pickle.loads(pickle.dumps(net))
    assert isinstance(again[4].bias, nn.Parameter)
    net.double()
    assert net[0].weight.dtype == dt.float64 and net[1].num_batches_tracked.dtype == dt.int64


def test_hook_order_and_kwargs():
    class Scale(nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    m, order = Scale(), []
    m.register_forward_pre_hook(lambda mod, args: order.append("second"))
    m.register_forward_pre_hook(lambda mod, args: order.append("first"), prepend=True)
    m.register_forward_pre_hook(lambda mod, args, kw: (args, {"scale": 3.0}), with_kwargs=True)
    m.register_forward_hook(lambda mod, args, kw, out: out + kw["scale"], with_kwargs=True)
    assert m(dt.ones(2)).tolist() == [6.0, 6.0] and order == ["first", "second"]
    m.register_forward_pre_hook(lambda mod, args, kw: args, with_kwargs=True)
    with pytest.raises(RuntimeError, match="new_args, new_kwargs"):
        m(dt.ones(2))


def test_full_backward_hooks():
    lin = nn.Linear(3, 2).double()
    seen = {}
    lin.register_full_backward_hook(lambda m, gi, go: seen.update(gi=gi, go=go))
    x = dt.randn(4, 3, dtype=dt.float64, requires_grad=True)
    g = dt.randn(4, 2, dtype=dt.float64)
    lin(x).backward(g)
    np.testing.assert_array_equal(seen["go"][0].numpy(), g.numpy())
    np.testing.assert_array_equal(seen["gi"][0].numpy(), x.grad.numpy())
    np.testing.assert_allclose(x.grad.numpy(), g.numpy() @ lin.weight.detach().numpy())
    # a returned grad_input replaces the input gradient; a pre-hook can replace grad_output
    double = lin.register_full_backward_hook(lambda m, gi, go: (gi[0] * 2,))
    x.grad = None
    lin(x).backward(g)
    np.testing.assert_allclose(x.grad.numpy(), 2 * g.numpy() @ lin.weight.detach().numpy())
    pre = lin.register_full_backward_pre_hook(lambda m, go: (go[0] * 0,))
    lin.zero_grad()
    lin(x).backward(g)
    assert not lin.weight.grad.numpy().any()
    pre.remove()
    double.remove()
    # inputs without gradient: grad_input is None, the hook still runs (Grad-CAM style)
    seen.clear()
    lin(dt.randn(4, 3, dtype=dt.float64)).sum().backward()
    assert seen["gi"] == (None,) and seen["go"][0].shape == (4, 2)


def test_clip_grad_norm_and_value():
    p1, p2 = nn.Parameter(dt.zeros(3)), nn.Parameter(dt.zeros(2, 2))
    p1.grad = dt.tensor([3.0, 0.0, 0.0])
    p2.grad = dt.tensor([[0.0, 4.0], [0.0, 0.0]])
    total = clip_grad_norm_([p1, p2], max_norm=1.0)
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(p1.grad.numpy(), [0.6, 0, 0], rtol=1e-5)
    assert clip_grad_norm_([p1, p2], 10.0).item() == pytest.approx(1.0, rel=1e-5)  # unchanged
    np.testing.assert_allclose(p2.grad.numpy(), [[0, 0.8], [0, 0]], rtol=1e-5)
    p1.grad = dt.tensor([-3.0, 1.0, 0.0])
    assert clip_grad_norm_(p1, 1.5, norm_type="inf").item() == pytest.approx(3.0)
    np.testing.assert_allclose(p1.grad.numpy(), [-1.5, 0.5, 0], rtol=1e-5)
    p1.grad = dt.tensor([np.nan, 1.0, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(p1, 1.0, error_if_nonfinite=True)
    p2.grad = dt.tensor([[-3.0, 0.2], [0.5, 9.0]])
    assert get_total_norm([p2.grad], 1.0).item() == pytest.approx(12.7)
    clip_grad_value_([p2], 0.5)
    np.testing.assert_allclose(p2.grad.numpy(), [[-0.5, 0.2], [0.5, 0.5]])


def test_parameters_vector_round_trip():
    lin = nn.Linear(3, 2)
    vec = parameters_to_vector(lin.parameters())
    assert vec.shape == (8,)
    np.testing.assert_array_equal(vec.detach().numpy()[:6], lin.weight.detach().numpy().ravel())
    new = dt.arange(8, dtype=dt.float32)
    vector_to_parameters(new, lin.parameters())
    np.testing.assert_array_equal(lin.weight.detach().numpy(), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(lin.bias.detach().numpy(), [6, 7])
    with pytest.raises(ValueError, match="7 elements"):
        vector_to_parameters(dt.zeros(7), lin.parameters())
