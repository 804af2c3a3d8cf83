"""A PyTorch user's script, unchanged apart from the import: the sub-pixel super-resolution
network of PyTorch's examples/super_resolution (ESPCN: convolutions, nn.PixelShuffle,
orthogonal init), trained with Adam under a CyclicLR schedule on generated smooth images,
then PixelUnshuffle checked as the exact inverse."""
import numpy as np
import pytest

import dtrain as torch
import dtrain.nn.functional as F
import dtrain.nn.init as init
from dtrain import nn


class Net(nn.Module):
    def __init__(self, upscale_factor):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(1, 16, (5, 5), (1, 1), (2, 2))
        self.conv2 = nn.Conv2d(16, 8, (3, 3), (1, 1), (1, 1))
        self.conv3 = nn.Conv2d(8, upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
        self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
        self._initialize_weights()

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.pixel_shuffle(self.conv3(x))

    def _initialize_weights(self):
        init.orthogonal_(self.conv1.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv2.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv3.weight)


def smooth_images(n, size=16):
    """Sums of random low-frequency sinusoids: learnable from their 2x downsampling."""
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    imgs = np.zeros((n, 1, size, size), np.float32)
    for _ in range(3):
        fy, fx, ph = rng.uniform(0.1, 0.5, (3, n, 1, 1))
        imgs[:, 0] += np.sin(fy * yy + fx * xx + 6 * ph).astype(np.float32)
    return torch.tensor(imgs / 3)


def test_espcn_trains_and_pixel_unshuffle_inverts():
    torch.manual_seed(0)
    target = smooth_images(32)
    low_res = F.avg_pool2d(target, 2)
    model = Net(upscale_factor=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=2e-3, max_lr=2e-2,
                                                  step_size_up=10, cycle_momentum=False)
    criterion = nn.MSELoss()
    losses, lrs = [], []
    for _ in range(100):
        optimizer.zero_grad()
        loss = criterion(model(low_res), target)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(scheduler.get_last_lr()[0])
    assert losses[-1] < 0.2 * losses[0]
    nearest = criterion(F.interpolate(low_res, scale_factor=2), target).item()
    assert losses[-1] < nearest  # better than repeating each low-resolution pixel
    # triangular: up over 10 steps, down over 10, period 20
    assert lrs[9] == pytest.approx(2e-2) and lrs[19] == pytest.approx(2e-3)
    assert lrs[4] == pytest.approx(2e-3 + 18e-3 * 0.5)

    with torch.no_grad():
        features = model.conv3(model.relu(model.conv2(model.relu(model.conv1(low_res)))))
        out = model(low_res)
        assert torch.equal(nn.PixelUnshuffle(2)(out), features)
        # output pixel (2i + a, 2j + b) is channel 2a + b at (i, j)
        assert torch.equal(out[:, 0, 1::2, 0::2], features[:, 2])
