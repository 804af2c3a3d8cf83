"""The PyTorch DCGAN tutorial's script (Generator of ConvTranspose2d + BatchNorm2d + ReLU +
Tanh, Discriminator of Conv2d + LeakyReLU + BatchNorm2d + Sigmoid, `weights_init` through
`model.apply`, BCELoss, two Adam optimizers) run on dtrain with only the import changed, scaled
to 16x16 generated images of one bright blob each."""
import numpy as np

import dtrain as torch
import dtrain.nn as nn
import dtrain.optim as optim
import dtrain.utils.data

nc, nz, ngf, ndf = 1, 8, 8, 8
lr = 0.002  # the tutorial's 0.0002, raised for a run of a few dozen steps
beta1 = 0.5
ngpu = 1


def blobs(n, size=16, seed=0):
    """`n` images in [-1, 1]: a Gaussian blob at a random place on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(4, size - 4, (2, n, 1, 1))
    img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
    return (img * 2 - 1).astype(np.float32)[:, None]


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find('BatchNorm') != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


class Generator(nn.Module):
    def __init__(self, ngpu):
        super(Generator, self).__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),   # -> (ngf*2) x 4 x 4
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # -> ngf x 8 x 8
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),       # -> nc x 16 x 16
            nn.Tanh()
        )

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self, ngpu):
        super(Discriminator, self).__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),                # -> ndf x 8 x 8
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),           # -> (ndf*2) x 4 x 4
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),             # -> 1 x 1 x 1
            nn.Sigmoid()
        )

    def forward(self, input):
        return self.main(input)


def train(num_epochs=6, record=None):
    """The tutorial's loop; `record(i, netD, netG, ...)` is called around the optimizer steps."""
    torch.manual_seed(999)
    device = torch.device("cuda:0" if (torch.cuda.is_available() and ngpu > 0) else "cpu")
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(blobs(64)))
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)

    netG = Generator(ngpu).to(device)
    netG.apply(weights_init)
    netD = Discriminator(ngpu).to(device)
    netD.apply(weights_init)

    criterion = nn.BCELoss()
    real_label = 1.
    fake_label = 0.
    optimizerD = optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))

    G_losses, D_losses, D_x_hist, D_G_z1_hist = [], [], [], []
    iters = 0
    for epoch in range(num_epochs):
        for i, data in enumerate(dataloader, 0):
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            real_cpu = data[0].to(device)
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), real_label, dtype=torch.float, device=device)
            output = netD(real_cpu).view(-1)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()

            noise = torch.randn(b_size, nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            if record:
                record("before D step", iters, netD, netG, label=label, output=output,
                       errD_fake=errD_fake)
            optimizerD.step()
            if record:
                record("after D step", iters, netD, netG)

            # (2) Update G network: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()
            if record:
                record("after G step", iters, netD, netG)

            G_losses.append(errG.item())
            D_losses.append(errD.item())
            D_x_hist.append(D_x)
            D_G_z1_hist.append(D_G_z1)
            assert 0 < D_G_z2 < 1
            iters += 1
    return G_losses, D_losses, D_x_hist, D_G_z1_hist


def _params(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def test_dcgan_trains_and_the_discriminator_separates_real_from_fake():
    G_losses, D_losses, D_x, D_G_z1 = train()
    assert len(G_losses) == 24 and np.isfinite(G_losses + D_losses).all()
    # at the start D cannot tell (both near 0.5); a few D steps later it can
    assert abs(D_x[0] - D_G_z1[0]) < 0.2
    assert np.mean(D_x[4:8]) - np.mean(D_G_z1[4:8]) > 0.2
    assert np.mean(D_losses[-4:]) < D_losses[0] - 0.2
    assert np.ptp(G_losses) > 0.05  # G's loss moves with D


def test_dcgan_steps_update_only_their_own_networks_with_adams_formula():
    seen = {}

    def record(stage, it, netD, netG, **extra):
        if it >= 2:
            return
        seen[stage, it] = (_params(netD), _params(netG),
                           [p.grad.numpy().copy() for p in netD.parameters()],
                           {k: t.detach().clone() for k, t in extra.items()})

    train(num_epochs=1, record=record)
    # label.fill_(fake_label) filled the label in place; BCELoss on it is -mean(log(1 - D))
    extra = seen["before D step", 0][3]
    assert extra["label"].tolist() == [0.0] * 16
    out = extra["output"].detach().numpy().astype(np.float64)
    np.testing.assert_allclose(extra["errD_fake"].item(), -np.log(1 - out).mean(), rtol=1e-5)
    # weights_init wrote through .data: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales, 0 shifts
    conv1, conv2, bn_weight, bn_bias, conv3 = seen["before D step", 0][0]
    assert abs(np.concatenate([conv1.ravel(), conv2.ravel()]).std() - 0.02) < 0.003
    assert abs(bn_weight - 1).max() < 0.1 and not bn_bias.any()
    m = v = 0.0
    for it in range(2):
        d0, g0, grads, _ = seen["before D step", it]
        d1, g1, _, _ = seen["after D step", it]
        d2, g2, _, _ = seen["after G step", it]
        for a, b in zip(g0, g1):  # the D step leaves G alone ...
            np.testing.assert_array_equal(a, b)
        for a, b in zip(d1, d2):  # ... and the G step D (though errG.backward filled D's grads)
            np.testing.assert_array_equal(a, b)
        assert any(not np.array_equal(a, b) for a, b in zip(g1, g2))
        # Adam with betas=(0.5, 0.999), by hand in float64, on D's conv weight
        g = grads[0].astype(np.float64)
        m, v = beta1 * m + (1 - beta1) * g, 0.999 * v + 0.001 * g * g
        step = it + 1
        update = lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
        np.testing.assert_allclose(d1[0], d0[0] - update, rtol=1e-5, atol=1e-7)
