"""A linear regression written as older PyTorch tutorials write it — legacy constructors,
manual gradient descent through `.data`, `.type()` checks, formatted losses — run with
`import dtrain as torch` and nothing else changed."""
import math

import numpy as np
import pytest

import dtrain as torch
import dtrain.nn.functional as F

TRUE_W, TRUE_B = 2.5, -0.7


def fit(make_x):
    torch.manual_seed(0)
    x = make_x(100, 1).uniform_(-1, 1)
    assert x.type() == "torch.FloatTensor" and isinstance(x, torch.FloatTensor)
    y = TRUE_W * x + TRUE_B + 0.01 * torch.randn(100, 1)

    w = torch.randn(1, requires_grad=True)
    b = torch.zeros(size=(1,), requires_grad=True)
    lr, log, losses = 0.5, [], []
    for step in range(200):
        y_pred = x.mm(w.view(1, 1)) + b
        loss = (y_pred - y).pow(2).mean()
        loss.backward()
        w.data -= lr * w.grad.data
        b.data -= lr * b.grad.data
        w.grad.data.zero_()
        b.grad.data.zero_()
        losses.append(loss.item())
        if step % 50 == 0:
            log.append(f"step {step}: loss {loss:.4f} (|loss| {loss.norm():.4f}) residual norm "
                       f"{(y_pred - y).norm():.4f}")
    return w, b, losses, log


@pytest.mark.parametrize("make_x", [torch.Tensor, torch.FloatTensor])
def test_legacy_regression_fits_the_generating_weights(make_x):
    w, b, losses, log = fit(make_x)
    assert abs(w.item() - TRUE_W) < 1e-2 and abs(b.item() - TRUE_B) < 1e-2
    assert losses[-1] < 1e-3 < losses[0]
    assert log[0].startswith(f"step 0: loss {losses[0]:.4f} (|loss| {losses[0]:.4f}) ")
    assert len(log) == 4 and all(" residual norm " in line for line in log)
    assert w.grad.tolist() == [0.0] and w.type() == "torch.FloatTensor"


def test_legacy_helpers_give_exact_values():
    idx = torch.LongTensor([2, 0, 1])
    target = F.one_hot(idx, num_classes=3).type(torch.FloatTensor)
    assert target.type() == "torch.FloatTensor"
    assert torch.equal(target, torch.eye(3)[[2, 0, 1]])
    m = torch.Tensor([[3, 4], [0, 0]])
    assert m.norm().item() == 5.0 and m.norm(dim=1).tolist() == [5.0, 0.0]
    assert torch.linalg.norm(m, 1).item() == 4.0 and m.norm(p=1).item() == 7.0
    assert m.diag().tolist() == [3.0, 0.0] and m.triu(1).tolist() == [[0.0, 4.0], [0.0, 0.0]]
    assert torch.DoubleTensor(2, 2).type() == "torch.DoubleTensor"
    assert isinstance(torch.randint(10, (3,)), torch.LongTensor)
    assert f"{m.norm():.3f}" == "5.000" and math.isclose(float(m.norm(float("inf"))), 4.0)
    np.testing.assert_array_equal(torch.ByteTensor([1, 0]).numpy(), np.array([1, 0], np.uint8))
