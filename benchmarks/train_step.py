"""One training step (forward, backward, SGD update), dtrain vs PyTorch (when importable),
as JSON: milliseconds per step and the ratio dtrain/torch.

(a) MLP 784-1024-1024-10 with ReLU, batch 128, cross-entropy;
(b) CNN on 64x3x32x32: conv3x3(3->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2,
    linear(4096->128)+ReLU, linear(128->10), cross-entropy.
Both libraries get the same float32 data; each runs with its default threads.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import best_time, emit, try_torch  # noqa: E402

import dtrain as dt  # noqa: E402


def mlp(nn):
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def cnn(nn):
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10))


CASES = {"mlp_784_1024_1024_10_b128": (mlp, (128, 784)),
         "cnn_64x3x32x32": (cnn, (64, 3, 32, 32))}


def step_ms(lib, model, x, y, repeat):
    opt = lib.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = lib.nn.functional.cross_entropy

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return best_time(step, repeat=repeat, warmup=2) * 1e3


def run(lib, make, build, shape, repeat):
    rng = np.random.default_rng(0)
    x = make(rng.standard_normal(shape).astype(np.float32))
    y = make(rng.integers(0, 10, shape[0]))
    return step_ms(lib, build(lib.nn), x, y, repeat)


def main():
    repeat = 20
    result = {"unit": "ms per training step (best of %d)" % repeat, "dtrain": {}, "torch": None}
    dt.manual_seed(0)
    for name, (build, shape) in CASES.items():
        result["dtrain"][name] = run(dt, dt.tensor, build, shape, repeat)
    torch = try_torch()
    if torch is not None:
        torch.manual_seed(0)
        result["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        for name, (build, shape) in CASES.items():
            result["torch"][name] = run(torch, torch.tensor, build, shape, repeat)
        d, t = result["dtrain"], result["torch"]
        result["ratio_vs_torch (dtrain/torch time)"] = {
            "mlp (target <= 1.15)": d["mlp_784_1024_1024_10_b128"] / t["mlp_784_1024_1024_10_b128"],
            "cnn (target <= 2)": d["cnn_64x3x32x32"] / t["cnn_64x3x32x32"]}
    emit(result)


if __name__ == "__main__":
    main()
