"""A PyTorch-style classifier script written against torch, run on dtrain with only the import
changed, using the sorting/scan/reshuffle/product names: the ImageNet example's top-k
`accuracy()` (topk, t, eq, expand_as), an EMA of the weights with `lerp_`, a bilinear
feature layer in `torch.einsum`, flip/roll augmentation, class counts from `torch.unique`,
hardest-example mining with `torch.sort`, a nearest-class-mean check with `torch.cdist`, and
a cumulative precision curve with `torch.cumsum`, on the 8x8 digits."""
import copy

import numpy as np

import dtrain as torch
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.data.datasets import Digits


class BilinearNet(nn.Module):
    def __init__(self, hidden=32, classes=10):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.pair = nn.Parameter(torch.randn(4, hidden, hidden) * 0.05)
        self.fc2 = nn.Linear(hidden + 4, classes)

    def forward(self, x):
        h = F.relu(self.fc1(torch.flatten(x, 1)))
        pairs = torch.einsum("bi,kij,bj->bk", h, self.pair, h)  # 4 bilinear features
        return self.fc2(torch.cat([h, pairs], dim=1))


def accuracy(output, target, topk=(1,)):
    """Computes the accuracy over the k top predictions (pytorch/examples imagenet)."""
    with torch.no_grad():
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
            res.append(correct_k.mul_(100.0 / batch_size))
        return res


def augment(images):
    shift = torch.roll(images, shifts=1, dims=3)
    return torch.where(torch.rand(images.size(0), 1, 1, 1) < 0.5, shift, images)


def main(steps=60, batch_size=64, decay=0.9):
    torch.manual_seed(0)
    train_set, test_set = Digits(train=True), Digits(train=False)
    x_train, y_train = torch.tensor(train_set.data), torch.tensor(train_set.targets)
    x_test, y_test = torch.tensor(test_set.data), torch.tensor(test_set.targets)
    _, counts = torch.unique(y_train, return_counts=True)
    model = BilinearNet()
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, lerp_checks = [], []
    for step in range(steps):
        idx = torch.randint(0, x_train.size(0), (batch_size,))
        data, target = augment(x_train[idx]), y_train[idx]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        with torch.no_grad():
            before = ema.fc1.weight.clone()
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
            if step < 2:
                lerp_checks.append((before, model.fc1.weight.clone(), ema.fc1.weight.clone()))
    model.eval()
    with torch.no_grad():
        logits = model(x_test)
        top1, top3 = accuracy(logits, y_test, topk=(1, 3))
        per_sample = F.cross_entropy(logits, y_test, reduction="none")
        hardest_loss, hardest = torch.sort(per_sample, descending=True)
        feats = torch.flatten(x_train, 1)
        means = torch.stack([feats[y_train == c].mean(0) for c in range(10)])
        nearest = torch.cdist(torch.flatten(x_test, 1), means).argmin(1)
        ranked = logits.softmax(1).amax(1).argsort(descending=True)
        hits = (logits.argmax(1) == y_test)[ranked].float()
        precision_curve = torch.cumsum(hits, 0) / torch.arange(1, hits.numel() + 1)
    return dict(losses=losses, counts=counts, top1=top1, top3=top3, logits=logits,
                y_test=y_test, per_sample=per_sample, hardest=hardest,
                hardest_loss=hardest_loss, nearest=nearest, curve=precision_curve,
                lerp_checks=lerp_checks, decay=decay, ema=ema, model=model, x_test=x_test)


def test_topk_ema_script_trains_and_its_names_give_exact_values():
    r = main()
    losses = r["losses"]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
    # class counts and top-k accuracies equal NumPy's on the same logits
    targets = r["y_test"].numpy()
    assert r["counts"].tolist() == np.bincount(Digits(train=True).targets).tolist()
    logits = r["logits"].numpy()
    order = np.argsort(-logits, 1, kind="stable")
    for k, got in ((1, r["top1"]), (3, r["top3"])):
        want = 100.0 * (order[:, :k] == targets[:, None]).any(1).mean()
        assert got.shape == (1,) and abs(got.item() - want) < 1e-4
    assert r["top1"].item() > 80.0 and r["top3"].item() >= r["top1"].item()
    # the hardest examples, sorted; the precision curve is a running mean
    per = r["per_sample"].numpy()
    np.testing.assert_array_equal(r["hardest"].numpy(), np.argsort(-per, kind="stable"))
    np.testing.assert_allclose(r["hardest_loss"].numpy(), per[r["hardest"].numpy()])
    curve = r["curve"].numpy()
    assert abs(curve[-1] - r["top1"].item() / 100) < 1e-6  # all predictions: top-1 accuracy
    assert curve[0] == 1.0  # the most confident prediction is right
    # nearest class mean from cdist equals a NumPy distance matrix
    feats = Digits(train=True).data.reshape(-1, 64)
    means = np.stack([feats[Digits(train=True).targets == c].mean(0) for c in range(10)])
    test = r["x_test"].numpy().reshape(-1, 64)
    dists = np.sqrt(((test[:, None] - means[None]) ** 2).sum(-1))
    agree = (r["nearest"].numpy() == dists.argmin(1)).mean()
    assert agree > 0.99 and (r["nearest"].numpy() == targets).mean() > 0.8
    # EMA: each lerp_ is e + (1 - decay) * (p - e), exactly
    for before, p, after in r["lerp_checks"]:
        want = before.numpy() + (1 - r["decay"]) * (p.numpy() - before.numpy())
        np.testing.assert_allclose(after.numpy(), want, rtol=1e-6, atol=1e-7)
    assert not any(p.requires_grad for p in r["ema"].parameters())
