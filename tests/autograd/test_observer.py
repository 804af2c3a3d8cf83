"""The observer seam (autograd/observer.py): what eager execution reports, in order, and
that `@effect` methods (optimizer/scheduler steps, zero_grad) arrive as single events."""
import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.autograd.observer import Observer, effect, observing
from dtrain.core.state import state


class Log(Observer):
    """Logs events, except those inside an effect (as dtrain.jit's tracer records them)."""

    def __init__(self):
        self.events = []
        self.depth = 0  # > 0 inside an effect

    def log(self, *event):
        if not self.depth:
            self.events.append(event)

    def op(self, node, args, params, result):
        self.log("op", type(node).__name__)

    def write(self, tensor, array):
        self.log("write")

    def backward(self, create_graph):
        self.log("backward", create_graph)

    def accumulate(self, leaf, grad, apply):
        self.log("accumulate", tuple(leaf.shape))
        apply()

    def host_read(self, tensor, what):
        self.log("read", what)

    def effect(self, owner, method, args, kwargs):
        self.log("effect", f"{type(owner).__name__}.{method.__name__}", args)
        self.depth += 1
        try:
            return method(owner, *args, **kwargs)
        finally:
            self.depth -= 1


def test_a_training_step_reports_ops_backward_accumulations_and_effects():
    model = nn.Linear(3, 2)
    opt = dt.optim.SGD(model.parameters(), lr=0.5)
    sched = dt.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = dt.tensor([[1.0, 2.0, 3.0]])
    w0 = model.weight.detach().numpy().copy()
    log = Log()
    with observing(log):
        opt.zero_grad()
        loss = model(x).sum()
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
    kinds = [e[0] for e in log.events]
    assert kinds.index("backward") > kinds.index("op")
    assert [e for e in log.events if e[0] == "accumulate"] == [("accumulate", (2, 3)),
                                                                ("accumulate", (2,))]
    assert [e[1] for e in log.events if e[0] == "effect"] == \
        ["SGD.zero_grad", "SGD.step", "StepLR.step"]
    assert ("backward", False) in log.events and log.events[-1] == ("read", "item")
    # the observer let everything happen as in eager: the step used gradient x, lr 0.5
    np.testing.assert_allclose(model.weight._data, w0 - 0.5 * np.array([[1.0, 2, 3]] * 2))
    assert opt.param_groups[0]["lr"] == 0.25 and value == pytest.approx(float(loss))
    assert state.observer is None


def test_an_override_calling_the_base_effect_is_one_event():
    class Scaled(dt.optim.SGD):
        def step(self, closure=None):  # calls the base's step: still one effect
            return super().step(closure)

    w = dt.tensor([1.0, -2.0], requires_grad=True)
    opt = Scaled([w], lr=0.1)
    log = Log()
    with observing(log):
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
    assert [e[1] for e in log.events if e[0] == "effect"] == ["Scaled.zero_grad", "Scaled.step"]
    np.testing.assert_allclose(w._data, [0.8, -1.6])


def test_one_observer_per_thread_and_effect_is_transparent_without_one():
    class Counter:
        n = 0

        @effect
        def bump(self, k):
            self.n += k
            return self.n
    c = Counter()
    assert c.bump(2) == 2 and c.bump(3) == 5
    with observing(Log()):
        with pytest.raises(RuntimeError, match="Log is already observing"):
            with observing(Log()):
                pass
    assert state.observer is None
