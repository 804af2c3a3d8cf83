"""dt.compile / dt.jit.trace behaviour: guards, control-flow errors, fallbacks, printing,
passes, hooks in replay, and the memory plan (no allocation per replay)."""
import sys

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.autograd import engine


def _t(*shape, seed=0, grad=False):
    rng = np.random.default_rng(seed)
    return dt.tensor(rng.standard_normal(shape), requires_grad=grad)


def test_guards_record_again_for_a_new_batch_size():
    dt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    compiled = dt.compile(model)
    with dt.no_grad():
        for n in (5, 5, 5, 7, 7, 7, 5):
            x = _t(n, 3, seed=n)
            np.testing.assert_allclose(compiled(x)._data, model(x)._data, rtol=1e-12)
    assert sorted(g.values[g.inputs[0]].shape for g in compiled.graphs) == [(5, 3), (7, 3)]


def test_data_dependent_control_flow_is_reported():
    def f(x):
        if x.sum() > 0:  # bool() of a traced tensor
            return x * 2
        return x

    with pytest.raises(dt.jit.TraceError, match=r"Tensor.item\(\) was called on a traced "
                       r"tensor \(%\d+, bool\[\]\) inside the compiled function \(in f, "
                       r".*test_compile.py:\d+\)"):
        dt.compile(f)(_t(3))
    for read in (lambda x: x.tolist(), lambda x: x.numpy(), lambda x: float(x.sum())):
        with pytest.raises(dt.jit.TraceError, match="cannot be captured"):
            dt.compile(lambda x, r=read: r(x * 1))(_t(3))


def test_fallback_eager_runs_the_call_eagerly_and_warns_once():
    def f(x):
        y = x * 2
        return y * 3 if y.sum().item() > 0 else -y

    compiled = dt.compile(f, fallback="eager")
    x, z = _t(4, seed=1), -_t(4, seed=1)
    with pytest.warns(RuntimeWarning,
                      match=r"running eagerly .*Tensor.item\(\) was called on a traced tensor"):
        got = compiled(x)
    np.testing.assert_allclose(got._data, f(x)._data)
    np.testing.assert_allclose(compiled(z)._data, f(z)._data)  # no warning, no graph
    assert compiled.graphs == []


def test_values_made_outside_the_registry_are_detected():
    rng = np.random.default_rng(0)
    compiled = dt.compile(lambda x: x * dt.tensor(rng.random(8) >= 0.5))  # a NumPy mask
    compiled(_t(8))
    with pytest.raises(dt.jit.TraceError, match="outside the op registry and changed"):
        compiled(_t(8))


def test_constants_made_inside_the_function_are_folded():
    def f(x):
        c = dt.ones(4, dtype=dt.float64) * 3  # same on every call: a constant
        return x * c.exp()

    compiled = dt.compile(f)
    for seed in range(3):
        x = _t(4, seed=seed)
        np.testing.assert_allclose(compiled(x)._data, f(x)._data)
    graph, = compiled.graphs
    assert [n.name() for n in graph.nodes] == ["mul"]  # ones * 3 and exp folded


def test_cse_and_dce():
    def f(x):
        a = (x * 2).tanh()
        b = (x * 2).tanh()  # the same subexpression
        (x + 5).exp()       # unused
        return a + b

    compiled = dt.compile(f, passes=("cse", "dce"))
    x = _t(3)
    for _ in range(3):
        np.testing.assert_allclose(compiled(x)._data, f(x)._data)
    assert [n.name() for n in compiled.graphs[0].nodes] == ["mul", "tanh", "add"]
    plain = dt.compile(f, passes=())
    for _ in range(3):
        np.testing.assert_array_equal(plain(x)._data, compiled(x)._data)
    assert len(plain.graphs[0].nodes) == 7


def test_print_graph_and_trace():
    w = dt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    traced = dt.jit.trace(lambda x: (x @ w).relu().sum(-1), (_t(3, 2),))
    assert str(traced.graph).splitlines() == [
        "graph(%0: float64[3, 2]):",
        "  %1 = captured float32[2, 2]",
        "  %2 = matmul(%0, %1)  # float64[3, 2]",
        "  %3 = relu(%2)  # float64[3, 2]",
        "  %4 = sum(%3, -1, False)  # float64[3]",
        "  return %4"]
    x = _t(3, 2, seed=5)
    np.testing.assert_allclose(traced(x)._data, (x @ w).relu().sum(-1)._data)
    with pytest.raises(RuntimeError, match=r"traced for inputs \[3, 2\] float64, got \[4, 2\]"):
        traced(_t(4, 2))


def test_captured_parameters_are_read_live():
    w = dt.tensor([1.0, 2.0], dtype=dt.float64)
    compiled = dt.compile(lambda x: x * w)
    x = dt.tensor([1.0, 1.0], dtype=dt.float64)
    for _ in range(2):
        compiled(x)
    w._data[:] = [5.0, 7.0]  # in place, as optimizers update
    np.testing.assert_array_equal(compiled(x)._data, [5.0, 7.0])
    w.requires_grad_(True)  # a guard: recorded again, now replayed through autograd
    for _ in range(3):
        out = compiled(x)
    out.sum().backward()
    np.testing.assert_array_equal(w.grad._data, [1.0, 1.0])
    assert len(compiled.entries) == 1 and len(compiled.graphs) == 1


def test_inplace_writes_are_replayed():
    def f(x, buf):
        buf.mul_(0.5)
        buf.add_(x)
        y = x.clone()
        y[0] = 10.0
        return y * buf

    x = _t(3)
    buf, twin = dt.zeros(3, dtype=dt.float64), dt.zeros(3, dtype=dt.float64)
    compiled = dt.compile(f)
    for seed in range(5):
        x = _t(3, seed=seed)
        np.testing.assert_allclose(compiled(x, buf)._data, f(x, twin)._data)
    np.testing.assert_allclose(buf._data, twin._data)
    assert {"write", "setitem"} <= {n.kind for n in compiled.graphs[0].nodes}


def test_hooks_and_backward_callbacks_fire_in_replay():
    """What DDP relies on: post-accumulate-grad hooks and queue_callback, every step."""
    w = dt.tensor([1.0, 2.0, 3.0], dtype=dt.float64, requires_grad=True)
    events = []

    def hook(p):
        events.append(("hook", p.grad._data.copy()))
        engine.queue_callback(lambda: events.append(("callback", None)))
    w.register_post_accumulate_grad_hook(hook)

    def step(x):
        w.grad = None
        (w * x).sum().backward()

    compiled = dt.compile(step)
    for seed in range(4):
        w.grad = None
        compiled(_t(3, seed=seed))
    assert [e[0] for e in events] == ["hook", "callback"] * 4
    np.testing.assert_array_equal(events[-2][1], _t(3, seed=3)._data)
    kinds = [n.kind for n in compiled.graphs[0].nodes]
    assert kinds[-2:] == ["accumulate", "callbacks"]


def test_gradient_accumulation_across_replays():
    w = dt.tensor([1.0, -1.0], dtype=dt.float64, requires_grad=True)
    compiled = dt.compile(lambda x: ((w * x).tanh().sum()).backward())
    xs = [_t(2, seed=s) for s in range(4)]
    for x in xs:
        compiled(x)
    got = w.grad._data.copy()
    w.grad = None
    for x in xs:
        ((w * x).tanh().sum()).backward()
    np.testing.assert_allclose(got, w.grad._data, rtol=1e-12)


@pytest.mark.parametrize("passes, bound, buffers", [
    (dt.jit.PASSES, 4_000, 2),              # fused: the chain in one buffer (and the sum's)
    (("memory_plan",), 4_000, 3),           # two buffers, alternating (and the returned sum's)
    ((), 1_600_000, 0)], ids=["fusion", "memory_plan", "no-passes"])
def test_replay_after_warm_up_allocates_no_arrays(passes, bound, buffers, extra_peak):
    n = 200_000  # 1.6 MB per float64 array
    x, w = _t(n), _t(n, seed=1)

    def f(x, w):
        for _ in range(5):
            x = (x * w + 0.01).tanh() * 1.5
        return x.sum()

    compiled = dt.compile(f, passes=passes)
    with dt.no_grad():
        for _ in range(2):
            compiled(x, w)
        np.testing.assert_allclose(compiled(x, w)._data, f(x, w)._data, rtol=1e-12)
        compiled(x, w)
        peak = extra_peak(lambda: compiled(x, w))
    if passes:
        assert peak < bound  # only Python objects (the env list, the output tensor)
    else:
        assert peak >= bound  # each op allocates a new 1.6 MB array
    runner = compiled.entries[next(iter(compiled.entries))].runner
    assert len({id(buf) for buf in runner.plan.values()}) == buffers
    assert len(runner.plan) == (21 if passes else 0)  # every op, the returned 0-d sum too


def test_nested_compiled_functions_are_inlined():
    inner = dt.compile(lambda x: x.exp())
    outer = dt.compile(lambda x: inner(x) + 1)
    x = _t(3)
    for _ in range(3):
        np.testing.assert_allclose(outer(x)._data, np.exp(x._data) + 1)
    assert [n.name() for n in outer.graphs[0].nodes] == ["exp", "add"]
    assert inner.graphs == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="fallback must be one of"):
        dt.compile(lambda x: x, fallback="ignore")
    with pytest.raises(ValueError, match="unknown dtrain.jit pass"):
        dt.compile(lambda x: x, passes=("fold", "magic"))


def test_autocast_is_part_of_the_signature():
    a, b = _t(3, 4).float(), _t(4, 2, seed=1).float()
    compiled = dt.compile(lambda a, b: a @ b)
    for _ in range(3):
        assert compiled(a, b).dtype == dt.float32
    with dt.autocast("cpu"):
        for _ in range(3):
            assert compiled(a, b).dtype == dt.float16
    assert len(compiled.graphs) == 2


def test_inplace_ops_on_intermediates_keep_gradients():
    """Replay through autograd of in-place ops: the snapshot copy and the rebinding of the
    written tensor's graph node are part of the recording."""
    def f(x):
        y = x * 2
        y.mul_(x)   # reads the old y: a recorded copy
        y.add_(1.0)
        return (y * y).sum()

    compiled = dt.compile(f)
    for seed in range(4):
        x, twin = _t(3, seed=seed, grad=True), _t(3, seed=seed, grad=True)
        compiled(x).backward()
        f(twin).backward()
        np.testing.assert_allclose(x.grad._data, twin.grad._data, rtol=1e-12)
    kinds = [n.kind for n in compiled.graphs[0].nodes]
    assert kinds.count("copy") == 1 and kinds.count("write") == 2


def test_integer_casts_are_recorded():
    """`.long()` is a recorded cast, so indices computed from the data follow the data."""
    def f(x):
        idx = (x.abs() * 2).long()
        return dt.gather(x, 0, idx)

    compiled = dt.compile(f)
    for seed in range(4):
        x = dt.tensor(np.random.default_rng(seed).uniform(-1.4, 1.4, 5))
        np.testing.assert_array_equal(compiled(x)._data, f(x)._data)
    assert "cast" in [n.name() for n in compiled.graphs[0].nodes]


def test_calls_that_cannot_be_replayed_are_reported():
    w = dt.tensor([1.0, 2.0], dtype=dt.float64, requires_grad=True)
    opt = dt.optim.SGD([w], lr=0.1)

    def closure_step(x):
        opt.zero_grad()
        (w * x).sum().backward()
        opt.step(lambda: None)

    compiled = dt.compile(closure_step)
    with pytest.raises(dt.jit.TraceError, match=r"call SGD.step\(closure=...\)"):
        compiled(_t(2))  # the first call: nothing is replayed with a stale closure


@pytest.mark.parametrize("fn", [lambda x: (x[x > 0] * 2).sum(),
                                lambda x: (dt.masked_select(x, x > 0) + 1).sum(),
                                lambda x: x.nonzero().float().sum()],
                         ids=["mask_index", "masked_select", "nonzero"])
def test_results_whose_shape_depends_on_the_data_are_refused_at_the_first_call(fn):
    """A replay of a boolean-mask selection would reuse the recorded shape (a broadcast
    error or, worse, silently wrong values on the next data): refused while recording,
    naming the caller; shape-preserving masking compiles, as does a constant mask."""
    def v(*data):
        return dt.tensor(data, dtype=dt.float64)
    with pytest.raises(dt.jit.TraceError,
                       match=r"test_compile.py:\d+\) gives a result whose shape depends on"):
        dt.compile(fn)(v(1, -2, 3))
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        assert float(dt.compile(fn, fallback="eager")(v(1, -2, 3))) == float(fn(v(1, -2, 3)))
    masked = dt.compile(lambda x: (dt.where(x > 0, x, 0.0) * 2).sum())
    fixed = dt.tensor([True, False, True])
    by_constant = dt.compile(lambda x: x[fixed].sum())
    for data in [(1, -2, 3), (-1, 2, 3), (4, 5, -6)]:
        x = v(*data)
        assert float(masked(x)) == 2 * sum(v for v in data if v > 0)
        assert float(by_constant(x)) == data[0] + data[2]


def test_a_tensor_created_in_the_function_and_changed_in_place_starts_fresh_each_call():
    """`acc = dt.zeros(3); acc += x`: the graph's constant is acc's data before the first
    in-place change, not after it (the first two calls have equal data here, as in a
    warm-up on one batch, so the two recordings cannot tell)."""
    def f(x):
        acc = dt.zeros(3, dtype=dt.float64)
        acc += x
        acc[1] = 5.0
        acc.mul_(2)
        return acc * 1

    for check in (True, False):  # one recording: the tensor is known made by the function
        compiled = dt.compile(f, check=check)
        for v in (1.0, 1.0, 3.0, 4.0):
            x = dt.full((3,), v, dtype=dt.float64)
            assert compiled(x).tolist() == f(x).tolist() == [2 * v, 10.0, 2 * v]


def test_writes_through_a_detached_view_of_state_are_replayed_into_the_state():
    """`p.detach()` makes a new Tensor object on every call over the same array: it is the
    state (read and written by reference), not a constant copied per call."""
    state = dt.zeros(3, dtype=dt.float64)

    def f(x):
        view = state.detach()
        view.add_(x)
        return view.sum()

    compiled = dt.compile(f)
    for i in range(4):
        compiled(dt.full((3,), 1.0, dtype=dt.float64))
        assert state.tolist() == [i + 1.0] * 3


def test_hooks_added_or_removed_between_calls_record_again():
    """A graph replays the hooks that existed when it recorded: adding or removing a tensor
    or module hook later records again (a gradient hook added to freeze a layer, a forward
    hook removed), as eager would run them."""
    lin = dt.nn.Linear(3, 2).double()
    opt = dt.optim.SGD(lin.parameters(), lr=0.1)

    def step(x):
        opt.zero_grad()
        out = lin(x)
        out.sum().backward()
        opt.step()
        return out

    compiled = dt.compile(step)
    x = _t(4, 3)
    for _ in range(3):
        compiled(x)
    frozen = lin.weight.detach().clone()
    handle = lin.weight.register_hook(lambda g: g * 0)
    compiled(x)
    assert lin.weight.tolist() == frozen.tolist()
    handle.remove()
    compiled(x)
    assert lin.weight.tolist() != frozen.tolist()
    for hooked in (True, False, True):
        handle = lin.register_forward_hook(lambda m, args, out: out * 2) if hooked else None
        with dt.no_grad():
            want = lin(x)  # with the current weights, before the step updates them
        np.testing.assert_allclose(compiled(x).tolist(), want.tolist(), rtol=1e-12)
        if handle is not None:
            handle.remove()


def test_train_and_eval_inside_a_compiled_step_are_replayed():
    """`model.train()` / `model.eval()` are effects: after a replay the modules are in the
    mode the step left them in, as after an eager call."""
    model = dt.nn.Sequential(dt.nn.Linear(3, 3), dt.nn.Dropout(0.5)).double()

    def step(x):
        model.train()
        out = model(x).sum()
        model.eval()
        return out

    compiled = dt.compile(step)
    for _ in range(4):
        model.train()
        compiled(_t(2, 3))
        assert not model.training and not model[1].training


def test_assigning_a_hyperparameter_inside_the_step_is_refused_at_the_first_call():
    """A manual warm-up (`group["lr"] = ...` in the step) would stay at its recorded value
    in every replay: refused while recording, naming the line; the scheduler's own writes
    (inside its step, an effect) are replayed."""
    w = dt.tensor([1.0, 2.0], dtype=dt.float64, requires_grad=True)
    opt = dt.optim.SGD([w], lr=0.1)
    calls = [0]

    def manual(x):
        calls[0] += 1
        opt.param_groups[0]["lr"] = 0.1 * min(1.0, calls[0] / 5)
        opt.zero_grad()
        (w * x).sum().backward()
        opt.step()

    with pytest.raises(dt.jit.TraceError, match=r"ParamGroup\['lr'\] was assigned .*"
                                                r"test_compile.py:\d+"):
        dt.compile(manual)(_t(2))
    scheduler = dt.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))

    def scheduled(x):
        opt.zero_grad()
        (w * x).sum().backward()
        opt.step()
        scheduler.step()

    compiled = dt.compile(scheduled)
    rates = []
    for _ in range(6):
        compiled(_t(2))
        rates.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(rates, [0.04, 0.06, 0.08, 0.1, 0.1, 0.1])


def test_a_compiled_module_is_a_module_a_parent_can_hold():
    """As torch.compile's OptimizedModule: `net.body = dt.compile(net.body)` keeps the body's
    parameters in the parent (and its optimizer), its state dict keys gain `_orig_mod.`,
    attributes read through, and training through it equals eager training."""
    def net():
        dt.manual_seed(0)
        return dt.nn.Sequential(dt.nn.Linear(3, 8), dt.nn.Tanh(), dt.nn.Linear(8, 2)).double()

    eager, model = net(), net()
    model[0] = dt.compile(model[0])
    assert isinstance(model[0], dt.nn.Module) and model[0].in_features == 3
    assert list(model.state_dict()) == ["0._orig_mod.weight", "0._orig_mod.bias",
                                        "2.weight", "2.bias"]
    opts = [dt.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (eager, model)]
    assert len(opts[1].param_groups[0]["params"]) == 4
    for i in range(5):
        x = _t(4, 3, seed=i)
        for m, opt in zip((eager, model), opts):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(model.parameters(), eager.parameters()):
        np.testing.assert_allclose(p._data, q._data, rtol=1e-12)
    assert len(model[0].graphs) == 1


class _Trainer:
    def __init__(self, model):
        self.model = model
        self.opt = dt.optim.SGD(model.parameters(), lr=0.1)

    def step(self, x):
        self.opt.zero_grad()
        loss = self.model(x).pow(2).mean()
        loss.backward()
        self.opt.step()
        return loss.detach()


def test_a_new_head_or_optimizer_between_calls_records_again():
    """Fine-tuning: the head is replaced and a new optimizer made between calls of a
    compiled step that names them (as a closure, or through a bound method's object). The
    graph holds the old parameters and optimizer, so the call records again and trains the
    new ones, as eager does."""
    def net():
        dt.manual_seed(0)
        return dt.nn.Sequential(dt.nn.Linear(3, 4), dt.nn.Tanh(), dt.nn.Linear(4, 2)).double()

    def closure_run(compiled):
        model = net()
        opt = dt.optim.SGD(model.parameters(), lr=0.1)

        def step(x):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            opt.step()
            return loss.detach()
        run = dt.compile(step) if compiled else step
        losses = []
        for i in range(6):
            if i == 3:
                dt.manual_seed(1)
                model[2] = dt.nn.Linear(4, 2).double()
                opt = dt.optim.SGD(model.parameters(), lr=0.1)  # the closure sees the new one
            losses.append(float(run(_t(5, 3, seed=i))))
        return losses, model[2].weight.tolist()

    def method_run(compiled):
        trainer = _Trainer(net())
        run = dt.compile(trainer.step) if compiled else trainer.step
        losses = []
        for i in range(6):
            if i == 3:
                dt.manual_seed(1)
                trainer.model[2] = dt.nn.Linear(4, 2).double()
                trainer.opt = dt.optim.SGD(trainer.model.parameters(), lr=0.1)
            losses.append(float(run(_t(5, 3, seed=i))))
        return losses, trainer.model[2].weight.tolist()

    for run in (closure_run, method_run):
        assert run(True) == run(False)


def test_recording_leaves_a_profiler_alone():
    """Graph mode observes through autograd's observer, not sys.setprofile: a profiler set by
    the user keeps receiving calls while a function records."""
    seen = []

    def profiler(frame, event, arg):
        if event == "call":
            seen.append(frame.f_code.co_name)
    w = dt.tensor([1.0, 2.0], dtype=dt.float64, requires_grad=True)
    opt = dt.optim.SGD([w], lr=0.5)

    def train_step(x):
        opt.zero_grad()
        (w * x).sum().backward()
        opt.step()
    compiled = dt.compile(train_step)
    sys.setprofile(profiler)
    try:
        for _ in range(3):
            compiled(_t(2))
    finally:
        sys.setprofile(None)
    # two recordings run the function, the replay does not; both were profiled
    assert seen.count("train_step") == 2 and "backward" in seen and "_run" in seen
    np.testing.assert_allclose(w._data, [1.0, 2.0] - 3 * 0.5 * _t(2)._data)


class _HalfSquare(dt.autograd.Function):
    """x^2 / 2 with a hand-written backward (a custom node that replay cannot rebuild)."""

    @staticmethod
    def forward(ctx, x):
        ctx.x = x
        return x * x * 0.5

    @staticmethod
    def backward(ctx, g):
        return g * ctx.x


def test_custom_functions_replay_without_gradients_only():
    f = dt.compile(lambda x: _HalfSquare.apply(x) + 1)
    with dt.no_grad():
        for seed in range(3):
            x = _t(3, seed=seed)
            np.testing.assert_allclose(f(x)._data, x._data ** 2 / 2 + 1)
    with pytest.raises(dt.jit.TraceError, match="_HalfSquareBackward"):
        for seed in range(2):
            f(_t(3, seed=seed, grad=True))


def test_ops_of_other_threads_are_not_recorded():
    import threading

    def f(x):
        worker = threading.Thread(target=lambda: (_t(5) * 3).exp())
        worker.start()
        worker.join()
        return x + 1

    compiled = dt.compile(f)
    for seed in range(3):
        x = _t(2, seed=seed)
        np.testing.assert_allclose(compiled(x)._data, x._data + 1)
    assert [n.name() for n in compiled.graphs[0].nodes] == ["add"]


def test_replacing_a_parameter_of_a_compiled_module_records_again():
    dt.manual_seed(0)
    model = nn.Linear(3, 2).double()
    compiled = dt.compile(model)
    x = _t(4, 3)
    with dt.no_grad():
        for _ in range(3):
            compiled(x)
        model.weight = nn.Parameter(dt.zeros(2, 3, dtype=dt.float64))
        for _ in range(3):
            np.testing.assert_allclose(compiled(x)._data, model(x)._data)
    np.testing.assert_allclose(compiled(x)._data, np.broadcast_to(model.bias._data, (4, 2)))


@pytest.mark.parametrize("passes", [dt.jit.PASSES, ()], ids=["memory_plan", "no-passes"])
def test_inference_mlp_replay_allocates_only_its_output(passes, extra_peak):
    dt.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.Tanh(),
                          nn.Linear(256, 4)).double()
    compiled = dt.compile(model, passes=passes)
    x = _t(256, 256)  # activations of 512 KB
    with dt.no_grad():
        for _ in range(2):
            compiled(x)
        np.testing.assert_allclose(compiled(x)._data, model(x)._data, rtol=1e-12)
        peak = extra_peak(lambda: compiled(x))
    if passes:
        # the 8 KB output, and NumPy's transient 64 KB ufunc buffer for the broadcast bias add
        assert peak < 80_000
    else:
        assert peak >= 512 * 1024


@pytest.mark.parametrize("loss", [
    lambda out, y: dt.nn.functional.cross_entropy(out, y, ignore_index=2, label_smoothing=0.1,
                                                  weight=dt.tensor([1.0, 2.0, 0.5, 1.5])),
    lambda out, y: dt.nn.functional.huber_loss(out, y.float().unsqueeze(1).expand(-1, 4),
                                               delta=0.5),
])
def test_values_derived_from_the_data_are_recorded_not_frozen(loss):
    """Class weights, ignore masks and huber's |d| < delta mask come from the data: two
    identical first calls must not turn them into constants of the graph."""
    w = dt.randn(3, 4, requires_grad=True)

    def f(x, y):
        return loss(x @ w, y)
    compiled = dt.compile(f)
    x = dt.randn(6, 3)
    y1, y2 = dt.tensor([0, 1, 2, 3, 0, 1]), dt.tensor([3, 3, 2, 0, 1, 2])
    for _ in range(2):  # the recordings see the same targets
        compiled(x, y1)
    for y in (y2, y1, y2):
        got, want = compiled(x, y), f(x, y)
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-6)
        (gw,) = dt.autograd.grad(got, w)
        (ww,) = dt.autograd.grad(want, w)
        np.testing.assert_allclose(gw.numpy(), ww.numpy(), rtol=1e-5)


def test_temporaries_of_planned_nodes_share_one_arena():
    """Conv and max-pool draw temporaries (padding, GEMM layouts, masks) from `Op.scratch`:
    after the first replay, those that do not outlive their node are views of one arena
    shared by all nodes, while what a node stashes for backward (max-pool's winning taps)
    stays its own; replays on new inputs still give eager's gradients."""
    dt.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 3, 3, padding=1), nn.MaxPool2d(2)).double()

    def step(x):
        model.zero_grad()
        (model(x) ** 2).sum().backward()
    compiled = dt.compile(step)
    rng = np.random.default_rng(0)
    for i in range(5):
        x = dt.tensor(rng.standard_normal((3, 2, 8, 8)))
        compiled(x)
        got = [p.grad._data.copy() for p in model.parameters()]
        step(x)
        for g, p in zip(got, model.parameters()):
            np.testing.assert_allclose(g, p.grad._data, rtol=1e-12, err_msg=f"call {i}")
    runner = compiled.entries[next(iter(compiled.entries))].runner
    kept = sorted(name for ws in runner.workspaces for name in ws.kept)
    assert kept == ["taps", "taps"]
    shared = [a for ws in runner.workspaces for name, a in ws.items() if name not in ws.kept]
    assert len(shared) > 4 and len({id(a.base) for a in shared}) == 1
