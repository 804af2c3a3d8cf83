"""Mixed precision on the CPU: autocast's float16 matmuls and GradScaler's loss scaling."""
import threading
import warnings

import numpy as np
import pytest

import dtrain as dt


class Net(dt.nn.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = dt.nn.Parameter(dt.tensor(rng.standard_normal((4, 3)) * 0.5,
                                           dtype=dt.float32))
        self.b = dt.nn.Parameter(dt.zeros(3))

    def forward(self, x):
        return x @ self.w + self.b


def batch():
    rng = np.random.default_rng(2)
    return (dt.tensor(rng.standard_normal((8, 4)), dtype=dt.float32),
            dt.tensor(rng.standard_normal((8, 3)), dtype=dt.float32))


# -- autocast --------------------------------------------------------------------------------
def test_autocast_runs_matmuls_in_float16_inside_only():
    a, b = dt.randn(3, 4), dt.randn(4, 5)
    a3, b3 = dt.randn(2, 3, 4), dt.randn(2, 4, 5)
    with dt.autocast("cpu"):
        assert dt.is_autocast_enabled("cpu") and not dt.is_autocast_enabled("cuda")
        for out in (a @ b, dt.matmul(a, b), dt.mm(a, b), dt.bmm(a3, b3), a.matmul(b),
                    a3 @ b):
            assert out.dtype == dt.float16
        c = a @ b
        assert (a + 1).dtype == dt.float32  # only the lower-precision ops are cast
        assert (a.double() @ b.double()).dtype == dt.float64  # float64 is never cast
    assert (a @ b).dtype == dt.float32 and not dt.is_autocast_enabled("cpu")
    np.testing.assert_allclose(c.float().numpy(), (a @ b).numpy(), rtol=2e-3, atol=2e-3)


def test_autocast_nesting_decorator_and_aliases():
    a = dt.randn(2, 2)
    assert dt.amp.autocast is dt.autocast

    @dt.amp.autocast(device_type="cpu", dtype=dt.float16)
    def product():
        return a @ a

    with dt.autocast("cpu"):
        with dt.autocast("cpu", enabled=False):
            assert (a @ a).dtype == dt.float32
        assert (a @ a).dtype == dt.float16
    assert product().dtype == dt.float16 and (a @ a).dtype == dt.float32


def test_autocast_is_thread_local_and_restored_after_errors():
    a = dt.randn(2, 2)
    seen = []
    with pytest.raises(KeyError):
        with dt.autocast("cpu"):
            worker = threading.Thread(target=lambda: seen.append((a @ a).dtype))
            worker.start()
            worker.join()
            raise KeyError("boom")
    assert seen == [dt.float32] and (a @ a).dtype == dt.float32


def test_cuda_autocast_leaves_cpu_tensors_alone():
    a = dt.randn(2, 2)
    with dt.autocast("cuda"):
        assert (a @ a).dtype == dt.float32


def test_autocast_gradients_reach_float32_leaves():
    a = dt.randn(3, 4, requires_grad=True)
    b = dt.randn(4, 2, requires_grad=True)
    with dt.autocast("cpu"):
        out = a @ b
    out.float().sum().backward()
    assert a.grad.dtype == dt.float32 and b.grad.dtype == dt.float32
    np.testing.assert_allclose(a.grad.numpy(), np.ones((3, 2)) @ b.detach().numpy().T,
                               rtol=2e-3, atol=2e-3)


def test_autocast_argument_checks():
    with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
        dt.autocast(dt.device("cpu"))
    with pytest.raises(RuntimeError, match="unsupported autocast device_type 'tpu'"):
        dt.autocast("tpu")
    a = dt.randn(2, 2)
    with pytest.warns(UserWarning, match="Disabling autocast"):
        ctx = dt.autocast("cpu", dtype=dt.float64)
    with ctx:
        assert (a @ a).dtype == dt.float32


# -- GradScaler ------------------------------------------------------------------------------
def scaled_step(scaler, opt, model, x, y, poison=None):
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    if poison is not None:
        loss = loss * poison
    scaler.scale(loss).backward()
    ret = scaler.step(opt)
    scaler.update()
    return ret


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")  # poisoned losses
def test_step_equals_unscaled_step_and_skips_inf_and_nan():
    x, y = batch()
    plain, scaled = Net(), Net()
    opt_p = dt.optim.SGD(plain.parameters(), lr=0.1)
    opt_s = dt.optim.SGD(scaled.parameters(), lr=0.1)
    scaler = dt.amp.GradScaler("cpu", init_scale=1024.0)
    opt_p.zero_grad()
    ((plain(x) - y) ** 2).mean().backward()
    opt_p.step()
    scaled_step(scaler, opt_s, scaled, x, y)
    np.testing.assert_allclose(scaled.w.detach().numpy(), plain.w.detach().numpy(), rtol=1e-6)
    assert scaler.get_scale() == 1024.0
    for bad in (float("inf"), float("nan")):
        before = scaled.w.detach().numpy().copy()
        assert scaled_step(scaler, opt_s, scaled, x, y, poison=bad) is None
        np.testing.assert_array_equal(scaled.w.detach().numpy(), before)
    assert scaler.get_scale() == 256.0


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")  # poisoned losses
def test_scale_schedule_matches_reference():
    x, y = batch()
    model = Net()
    opt = dt.optim.SGD(model.parameters(), lr=0.01)
    scaler = dt.amp.GradScaler("cpu", init_scale=64.0, growth_factor=3.0, backoff_factor=0.25,
                               growth_interval=3)
    bad_steps = {2, 3, 9, 10, 11}
    scale, tracker, expected, got = 64.0, 0, [], []
    for i in range(20):
        scaled_step(scaler, opt, model, x, y, poison=float("inf") if i in bad_steps else None)
        if i in bad_steps:  # the published rule: back off on overflow, grow after N clean
            scale, tracker = scale * 0.25, 0
        else:
            tracker += 1
            if tracker == 3:
                scale, tracker = scale * 3.0, 0
        expected.append(scale)
        got.append(scaler.get_scale())
    assert got == expected
    assert scaler.state_dict() == {"scale": expected[-1], "growth_factor": 3.0,
                                   "backoff_factor": 0.25, "growth_interval": 3,
                                   "_growth_tracker": tracker}


def test_scale_never_grows_past_float32():
    x, y = batch()
    model = Net()
    opt = dt.optim.SGD(model.parameters(), lr=0.0)
    scaler = dt.amp.GradScaler("cpu", init_scale=2.0 ** 126, growth_interval=1)
    for _ in range(2):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean().double()  # float64 loss: the scaled value is finite
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 2.0 ** 127


def test_unscale_then_step_and_stage_errors():
    x, y = batch()
    model = Net()
    opt = dt.optim.SGD(model.parameters(), lr=0.1)
    scaler = dt.amp.GradScaler("cpu", init_scale=8.0)
    ((model(x) - y) ** 2).mean().backward()
    reference = model.w.grad.numpy().copy()
    model.zero_grad()
    scaler.scale(((model(x) - y) ** 2).mean()).backward()
    np.testing.assert_allclose(model.w.grad.numpy(), 8 * reference, rtol=1e-6)
    scaler.unscale_(opt)
    np.testing.assert_allclose(model.w.grad.numpy(), reference, rtol=1e-6)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)  # uses the already unscaled gradients
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step"):
        scaler.unscale_(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="Closure use is not currently supported"):
        scaler.step(opt, closure=lambda: 0.0)


def test_fp16_gradients_refused_and_scale_keeps_loss_dtype():
    p = dt.nn.Parameter(dt.ones(3, dtype=dt.float16))
    opt = dt.optim.SGD([p], lr=0.1)
    scaler = dt.amp.GradScaler("cpu", init_scale=1024.0)
    loss = (p * p).sum()
    scaled = scaler.scale(loss)
    assert scaled.dtype == dt.float16 and scaled.item() == 3.0 * 1024
    assert scaler.scale([loss, (loss, loss)])[1][0].item() == 3.0 * 1024
    scaled.backward()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        scaler.unscale_(opt)
    with pytest.raises(ValueError, match="outputs must be a Tensor"):
        scaler.scale(3.0)


def test_disabled_scaler_is_transparent():
    scaler = dt.amp.GradScaler("cpu", enabled=False)
    loss = dt.tensor(2.0)
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0
    assert scaler.state_dict() == {}
    p = dt.nn.Parameter(dt.ones(2))
    p.grad = dt.ones(2)
    opt = dt.optim.SGD([p], lr=0.5)
    scaler.step(opt)
    np.testing.assert_array_equal(p.detach().numpy(), [0.5, 0.5])


@pytest.mark.skipif(dt.cuda.is_available(), reason="checks the no-CUDA fallback")
def test_cuda_scaler_without_cuda_warns_and_disables():
    with pytest.warns(UserWarning, match="CUDA is not available"):
        scaler = dt.amp.GradScaler()
    assert not scaler.is_enabled()


def test_scaler_argument_and_state_checks():
    with pytest.raises(AssertionError, match="growth factor must be > 1.0"):
        dt.amp.GradScaler("cpu", growth_factor=1.0)
    with pytest.raises(AssertionError, match="backoff factor must be < 1.0"):
        dt.amp.GradScaler("cpu", backoff_factor=1.0)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        dt.amp.GradScaler("tpu")
    with pytest.raises(RuntimeError, match="source state dict is empty"):
        dt.amp.GradScaler("cpu").load_state_dict({})
    with pytest.raises(AssertionError, match="No inf checks were recorded prior to update"):
        dt.amp.GradScaler("cpu").update()


def test_mixed_precision_training_resumes_from_checkpoint(tmp_path):
    """autocast + GradScaler + Adam on the CPU; a checkpoint mid-run resumes exactly."""
    rng = np.random.default_rng(1)
    xs = [dt.tensor(rng.standard_normal((16, 4)), dtype=dt.float32) for _ in range(30)]
    target = dt.tensor(rng.standard_normal((4, 3)), dtype=dt.float32)

    def run(model, opt, scaler, steps):
        losses = []
        for i in steps:
            opt.zero_grad()
            with dt.autocast("cpu"):
                pred = model(xs[i])
            assert pred.dtype == dt.float32  # float16 matmul + float32 bias promotes
            loss = ((pred - xs[i] @ target) ** 2).mean()
            scaler.scale(loss).backward()
            assert model.w.grad.dtype == dt.float32
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
        return losses

    def fresh():
        model = Net()
        opt = dt.optim.Adam(model.parameters(), lr=0.05)
        return model, opt, dt.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=4)

    model, opt, scaler = fresh()
    losses = run(model, opt, scaler, range(30))
    assert losses[-1] < 0.5 * losses[0]
    m1, o1, s1 = fresh()
    run(m1, o1, s1, range(15))
    dt.save({"model": m1.state_dict(), "optim": o1.state_dict(), "scaler": s1.state_dict()},
            tmp_path / "amp.ckpt")
    ckpt = dt.load(tmp_path / "amp.ckpt")
    m2, o2, s2 = fresh()
    m2.load_state_dict(ckpt["model"])
    o2.load_state_dict(ckpt["optim"])
    s2.load_state_dict(ckpt["scaler"])
    assert run(m2, o2, s2, range(15, 30)) == losses[15:]
    np.testing.assert_array_equal(m2.w.detach().numpy(), model.w.detach().numpy())
    assert s2.get_scale() == scaler.get_scale()


def test_no_warning_from_plain_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dt.amp.GradScaler("cpu")
        with dt.amp.autocast("cpu"):
            pass


def test_autocast_reaches_linear_and_convolutions():
    lin, conv = dt.nn.Linear(4, 3), dt.nn.Conv2d(1, 2, 3)
    with dt.autocast("cpu"):
        y = lin(dt.randn(2, 4))
        z = conv(dt.randn(1, 1, 5, 5))
    assert y.dtype == dt.float16 and z.dtype == dt.float16
    (y.float().sum() + z.float().sum()).backward()
    assert lin.weight.grad.dtype == dt.float32 and conv.weight.grad.dtype == dt.float32
    assert conv(dt.randn(1, 1, 5, 5)).dtype == dt.float32   # outside the region
