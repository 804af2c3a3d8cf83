"""A PyTorch-style VAE script (the shape of pytorch/examples' vae/main.py) run on dtrain with
only the import changed, on generated 28x28 seven-segment 'digits'; a variant checkpoints
the encoder with torch.utils.checkpoint and must compute the same gradients."""
import numpy as np

import dtrain as torch
import dtrain.nn.functional as F
from dtrain import nn, optim
from dtrain.utils.checkpoint import checkpoint
from dtrain.utils.data import DataLoader, TensorDataset

# segments a..g of a seven-segment display as (row0, row1, col0, col1) on a 28x28 image
SEGMENTS = {"a": (4, 7, 8, 20), "b": (5, 14, 18, 21), "c": (14, 24, 18, 21),
            "d": (21, 24, 8, 20), "e": (14, 24, 7, 10), "f": (5, 14, 7, 10),
            "g": (12, 15, 8, 20)}
DIGITS = ["abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg",
          "abcdfg"]


def digit_images(n, seed=0):
    """n images in [0, 1]: a random digit's segments, shifted and with noise."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, 28, 28), dtype=np.float32)
    for i in range(n):
        dy, dx = rng.integers(-2, 3, size=2)
        for s in DIGITS[rng.integers(10)]:
            r0, r1, c0, c1 = SEGMENTS[s]
            images[i, 0, r0 + dy:r1 + dy, c0 + dx:c1 + dx] = 1.0
    images += rng.uniform(0.0, 0.15, images.shape).astype(np.float32)
    return np.clip(images, 0.0, 1.0)


class VAE(nn.Module):
    def __init__(self):
        super(VAE, self).__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


class CheckpointedVAE(VAE):
    def encode(self, x):
        return checkpoint(super().encode, x, use_reentrant=False)


# Reconstruction + KL divergence losses summed over all elements and batch
def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def train(model, device, train_loader, optimizer, epoch):
    model.train()
    train_loss = 0
    for batch_idx, (data, _) in enumerate(train_loader):
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    return train_loss / len(train_loader.dataset)


def make(model_cls, device):
    torch.manual_seed(1)
    model = model_cls().to(device)
    return model, optim.Adam(model.parameters(), lr=1e-3)


def loader():
    data = torch.from_numpy(digit_images(256))
    return DataLoader(TensorDataset(data, torch.zeros(256)), batch_size=32, shuffle=True,
                      generator=torch.Generator().manual_seed(2))


def test_vae_trains_and_samples():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, optimizer = make(VAE, device)
    train_loader = loader()
    losses = [train(model, device, train_loader, optimizer, epoch) for epoch in range(1, 5)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.75 * losses[0], losses
    model.eval()
    with torch.no_grad():
        sample = torch.randn(64, 20).to(device)
        sample = model.decode(sample).cpu()
    images = sample.view(64, 1, 28, 28)
    assert images.shape == (64, 1, 28, 28) and not images.requires_grad
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


def test_checkpointed_encoder_gives_identical_gradients_and_training():
    device = torch.device("cpu")
    runs = []
    for model_cls in (VAE, CheckpointedVAE):
        model, optimizer = make(model_cls, device)
        train_loader = loader()
        data = next(iter(train_loader))[0]
        torch.manual_seed(3)  # the same eps in reparameterize
        recon, mu, logvar = model(data)
        loss_function(recon, data, mu, logvar).backward()
        grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
        torch.manual_seed(3)
        losses = [train(model, device, train_loader, optimizer, epoch) for epoch in (1, 2)]
        runs.append((grads, losses))
    (g0, l0), (g1, l1) = runs
    for k in g0:
        np.testing.assert_array_equal(g1[k], g0[k], err_msg=k)
    assert l0 == l1 and l0[1] < l0[0]
