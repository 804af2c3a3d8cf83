"""A PyTorch user's metric-learning script, unchanged apart from the import: an embedding
MLP trained with nn.TripletMarginLoss on generated clusters, evaluated with
F.cosine_similarity and F.pairwise_distance (as in the common triplet-network recipes)."""
import numpy as np
import pytest

import dtrain as torch
import dtrain.nn.functional as F
from dtrain import nn


class EmbeddingNet(nn.Module):
    def __init__(self, in_dim=10, dim=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, 32), nn.ReLU(), nn.Linear(32, dim))

    def forward(self, x):
        return F.normalize(self.net(x), dim=1)


def make_clusters(n_per_class=40, classes=4, in_dim=10):
    centers = torch.randn(classes, in_dim) * 2
    labels = torch.arange(classes * n_per_class) // n_per_class
    x = centers[labels] + torch.randn(len(labels), in_dim)
    return x, labels


def sample_triplets(labels, n):
    lab = labels.numpy()
    rng = np.random.default_rng(0)
    a = rng.integers(0, len(lab), n)
    p = np.array([rng.choice(np.flatnonzero(lab == lab[i])) for i in a])
    q = np.array([rng.choice(np.flatnonzero(lab != lab[i])) for i in a])
    return torch.tensor(a), torch.tensor(p), torch.tensor(q)


def test_triplet_training_separates_clusters():
    torch.manual_seed(0)
    x, labels = make_clusters()
    model = EmbeddingNet()
    criterion = nn.TripletMarginLoss(margin=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    a, p, q = sample_triplets(labels, 256)

    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        emb = model(x)
        loss = criterion(emb[a], emb[p], emb[q])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]

    with torch.no_grad():
        emb = model(x)
        sim = F.cosine_similarity(emb[a], emb[p]), F.cosine_similarity(emb[a], emb[q])
        assert sim[0].mean().item() > sim[1].mean().item() + 0.5
        # the loss is exactly max(d(a, p) - d(a, n) + margin, 0), d the pairwise distance
        d_ap, d_an = F.pairwise_distance(emb[a], emb[p]), F.pairwise_distance(emb[a], emb[q])
        manual = torch.clamp(d_ap - d_an + 0.5, min=0).mean()
        assert criterion(emb[a], emb[p], emb[q]).item() == pytest.approx(manual.item(), rel=1e-6)
        # unit-norm embeddings: cosine similarity is 1 - d^2 / 2 (eps aside)
        np.testing.assert_allclose(sim[0].numpy(), 1 - F.pairwise_distance(
            emb[a], emb[p], eps=0.0).numpy() ** 2 / 2, atol=1e-5)
