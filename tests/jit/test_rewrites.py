"""Graph rewrites (jit/rewrites.py): a relu-style mask after max pooling's gradient taken on
the pooled side. Compiled training steps equal eager ones exactly, with the rewrite on and
off, for non-overlapping and overlapping (padded) pools in 1-d and 2-d."""
import numpy as np

import dtrain as dt
from dtrain import nn
from dtrain.nn import functional as F


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv1d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 2, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)                  # 8x8 -> 4x4
        x = F.max_pool2d(F.relu(self.c2(x)), 3, stride=2, padding=1)  # overlapping: 2x2
        x = F.max_pool1d(F.relu(self.c3(x.flatten(2))), 2)       # 4 -> 2
        return self.fc(x.flatten(1))


def _train(passes, steps=10):
    dt.manual_seed(0)
    model = _Net().double()
    opt = dt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    run = step if passes is None else dt.compile(step, passes=passes)
    rng = np.random.default_rng(1)
    losses = [float(run(dt.tensor(rng.standard_normal((3, 2, 8, 8))),
                        dt.tensor(rng.integers(0, 5, 3)))) for _ in range(steps)]
    return losses, [p.detach().numpy() for p in model.parameters()], run


def test_relu_pool_rewrite_is_exact_and_takes_the_masks_on_the_pooled_side():
    want, params, _ = _train(None)
    for passes in (dt.jit.PASSES, tuple(p for p in dt.jit.PASSES if p != "relu_pool")):
        got, got_params, compiled = _train(passes)
        assert got == want
        for p, q in zip(got_params, params):
            np.testing.assert_array_equal(p, q)
        graph, = compiled.graphs
        masks = [tuple(graph.values[n.outs[0]].shape) for n in graph.nodes
                 if n.name() == "gt"]
        if "relu_pool" in passes:  # the three masks are pooled-sized
            assert sorted(masks) == [(3, 3, 2), (3, 4, 2, 2), (3, 4, 4, 4)]
        else:
            assert sorted(masks) == [(3, 3, 4), (3, 4, 4, 4), (3, 4, 8, 8)]
