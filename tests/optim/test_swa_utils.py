"""optim.swa_utils: averages equal the mean (or EMA) of the snapshots, SWALR's rates follow
PyTorch's formula, update_bn recomputes BatchNorm statistics; the SWA recipe as users run it."""
import math

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn


def _snapshots(model, n):
    """Change the model n times, yielding its parameters after each change."""
    for k in range(n):
        with dt.no_grad():
            for p in model.parameters():
                p.add_(k + 1)
        yield [p.detach().numpy().copy() for p in model.parameters()]


def test_averaged_model_holds_the_mean_of_the_updates():
    dt.manual_seed(0)
    model = nn.Linear(3, 2).double()
    swa = AveragedModel(model)
    snaps = []
    for snap in _snapshots(model, 4):
        swa.update_parameters(model)
        snaps.append(snap)
    for p, arrays in zip(swa.module.parameters(), zip(*snaps)):
        np.testing.assert_allclose(p.detach().numpy(), np.mean(arrays, axis=0), rtol=1e-12)
    assert int(swa.n_averaged) == 4
    assert list(swa.state_dict()) == ["n_averaged", "module.weight", "module.bias"]
    x = dt.randn(5, 3, dtype=dt.float64)
    np.testing.assert_allclose(swa(x).detach().numpy(), swa.module(x).detach().numpy())


def test_ema_multi_avg_fn():
    model = nn.Linear(2, 1, bias=False).double()
    with dt.no_grad():
        model.weight.fill_(1.0)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    ema.update_parameters(model)  # first update copies
    with dt.no_grad():
        model.weight.fill_(3.0)
    ema.update_parameters(model)
    np.testing.assert_allclose(ema.module.weight.detach().numpy(), [[1.2, 1.2]])


def test_swalr_anneals_to_swa_lr_with_pytorchs_formula():
    opt = dt.optim.SGD([nn.Parameter(dt.zeros(1))], lr=1.0)
    sched = SWALR(opt, swa_lr=0.1, anneal_epochs=4, anneal_strategy="linear")
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(6):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # linear: lr_t = swa * t/4 + 1.0 * (1 - t/4) for t = 0..4, then swa_lr
    np.testing.assert_allclose(lrs, [1.0, 0.775, 0.55, 0.325, 0.1, 0.1, 0.1], rtol=1e-12)
    cos = SWALR(dt.optim.SGD([nn.Parameter(dt.zeros(1))], lr=1.0), swa_lr=0.0, anneal_epochs=2)
    cos.optimizer.step()
    cos.step()
    np.testing.assert_allclose(cos.get_last_lr(), [1 - (1 - math.cos(math.pi / 2)) / 2])
    with pytest.raises(ValueError, match="anneal_strategy must by one of 'cos' or 'linear'"):
        SWALR(opt, 0.1, anneal_strategy="exp")


def test_update_bn_recomputes_the_statistics():
    dt.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).double()
    data = [dt.randn(8, 2, dtype=dt.float64) * 3 + 1 for _ in range(4)]
    with dt.no_grad():
        model[1].running_mean.fill_(100.0)
    update_bn([(x, None) for x in data], model)
    with dt.no_grad():
        feats = [model[0](x).numpy() for x in data]
    np.testing.assert_allclose(model[1].running_mean.numpy(),
                               np.mean([f.mean(0) for f in feats], axis=0), rtol=1e-10)
    np.testing.assert_allclose(model[1].running_var.numpy(),
                               np.mean([f.var(0, ddof=1) for f in feats], axis=0), rtol=1e-10)
    assert model[1].momentum == 0.1 and model.training


def test_the_swa_recipe_as_a_script():
    import dtrain as torch
    from dtrain.optim.swa_utils import SWALR as Sched
    from dtrain.optim.swa_utils import AveragedModel as Avg
    from dtrain.optim.swa_utils import update_bn as ubn

    torch.manual_seed(0)
    X = torch.randn(256, 4)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(256, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32,
                                         shuffle=True)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    swa_model, swa_start = Avg(model), 5
    swa_scheduler = Sched(optimizer, swa_lr=0.01)
    for epoch in range(10):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(xb), yb).backward()
            optimizer.step()
        if epoch >= swa_start:
            swa_model.update_parameters(model)
            swa_scheduler.step()
    ubn(loader, swa_model)
    swa_model.eval()
    with torch.no_grad():
        loss = nn.functional.mse_loss(swa_model(X), y).item()
    assert int(swa_model.n_averaged) == 5 and loss < 0.1 * y.var().item()
