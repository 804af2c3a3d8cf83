"""One training step (forward, backward, SGD update), dtrain vs PyTorch (when importable),
as JSON: milliseconds per step and the ratio dtrain/torch; and one forward pass of the CNN
without autograd (inference).

(a) MLP 784-1024-1024-10 with ReLU, batch 128, cross-entropy;
(b) CNN on 64x3x32x32: conv3x3(3->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2,
    linear(4096->128)+ReLU, linear(128->10), cross-entropy;
(c) CIFAR ResNet-20 (He et al. 2016: 3 stages of 3 basic blocks, 16/32/64 channels,
    BatchNorm, stride-2 stage entries with 1x1 conv + BatchNorm shortcuts) on 64x3x32x32.
Both libraries get the same float32 data; each runs with its default threads. The two
libraries' runs alternate, so that a load on the machine weighs on both alike, each turn after
a pause that lets the other library's threads go idle (_common.IDLE_PAUSE) and one untimed
call; each figure is the best of `repeat`. Usage: train_step.py [repeat] [--cpu-time];
--cpu-time runs both libraries on 1 thread and times the CPU time of that thread
(time.thread_time), which a loaded machine disturbs much less than wall time.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import IDLE_PAUSE, alternate, emit, try_torch  # noqa: E402

import dtrain as dt  # noqa: E402


def mlp(nn):
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def cnn(nn):
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10))


def resnet20(nn):
    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.shortcut = nn.Identity() if stride == 1 and cin == cout else \
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    layers, cin = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


CASES = {"mlp_784_1024_1024_10_b128": (mlp, (128, 784)),
         "cnn_64x3x32x32": (cnn, (64, 3, 32, 32)),
         "resnet20_64x3x32x32": (resnet20, (64, 3, 32, 32))}
TARGETS = {"mlp_784_1024_1024_10_b128": 1.15, "cnn_64x3x32x32": 1.2,
           "resnet20_64x3x32x32": 1.3, "cnn_64x3x32x32_inference": 1.2}


def train_step(lib, build, shape):
    """A function running one training step of a new model on fixed random data."""
    x, y = data(lib, shape)
    model = build(lib.nn)
    opt = lib.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = lib.nn.functional.cross_entropy

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return step


def inference(lib, build, shape):
    """A function running one forward pass without autograd of a new model (eval mode)."""
    x, _ = data(lib, shape)
    model = build(lib.nn).eval()

    def forward():
        with lib.no_grad():
            model(x)
    return forward


def data(lib, shape):
    rng = np.random.default_rng(0)
    return (lib.tensor(rng.standard_normal(shape).astype(np.float32)),
            lib.tensor(rng.integers(0, 10, shape[0])))


def main():
    args = [a for a in sys.argv[1:] if a != "--cpu-time"]
    cpu_time = "--cpu-time" in sys.argv[1:]
    repeat = int(args[0]) if args else 20  # ResNet-20: a quarter of it
    torch = try_torch()
    if cpu_time:
        dt.set_num_threads(1)
        if torch is not None:
            torch.set_num_threads(1)
    result = {"unit": "ms per call (best of %d, ResNet-20 of %d; libraries alternating)"
              % (repeat, max(1, repeat // 4)),
              "clock": "thread CPU time, 1 thread" if cpu_time else "wall time",
              "dtrain": {}, "torch": None}
    if torch is not None:
        result["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        result["ratio_vs_torch (dtrain/torch time)"] = {}
    runs = {name: (train_step, build, shape) for name, (build, shape) in CASES.items()}
    runs["cnn_64x3x32x32_inference"] = (inference, cnn, (64, 3, 32, 32))
    for name, (make, build, shape) in runs.items():
        dt.manual_seed(0)
        fns = [make(dt, build, shape)]
        if torch is not None:
            torch.manual_seed(0)
            fns.append(make(torch, build, shape))
        times, _ = alternate(fns, rounds=max(1, repeat // 4) if "resnet" in name else repeat,
                             repeat=1, warmup=2, pause=IDLE_PAUSE,
                             clock=time.thread_time if cpu_time else time.perf_counter)
        times = [t * 1e3 for t in times]
        result["dtrain"][name] = times[0]
        if torch is not None:
            result["torch"][name] = times[1]
            result["ratio_vs_torch (dtrain/torch time)"][
                f"{name} (target <= {TARGETS[name]})"] = times[0] / times[1]
    emit(result)


if __name__ == "__main__":
    main()
