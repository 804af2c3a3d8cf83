"""A PyTorch user's script, unchanged apart from the import: the "Saving and Loading Models"
tutorial's patterns — a whole model (`torch.save(model, PATH)`, loaded with
`weights_only=False`) and a general checkpoint of state dicts — around a few training steps
of its TheModelClass on generated images."""
import pickle

import pytest

import dtrain as torch
import dtrain.nn.functional as F
import dtrain.optim as optim
from dtrain import nn


class TheModelClass(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def train(model, optimizer, inputs, labels, steps):
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_save_whole_model_and_general_checkpoint(tmp_path):
    torch.manual_seed(0)
    labels = torch.arange(16) % 10
    inputs = torch.randn(16, 3, 32, 32) * 0.1 + labels.view(-1, 1, 1, 1) * 0.1

    model = TheModelClass()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = train(model, optimizer, inputs, labels, 6)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses

    PATH = tmp_path / "model.pt"
    torch.save(model, PATH)
    with pytest.raises(pickle.UnpicklingError, match="weights_only=False"):
        torch.load(PATH)  # PyTorch >= 2.6: a pickled model needs weights_only=False
    loaded = torch.load(PATH, weights_only=False)
    loaded.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(inputs), model(inputs))

    CKPT = tmp_path / "checkpoint.tar"
    torch.save({"epoch": 6, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "loss": losses[-1]}, CKPT)
    resumed = TheModelClass()
    resumed_opt = optim.SGD(resumed.parameters(), lr=0.01, momentum=0.9)
    checkpoint = torch.load(CKPT, weights_only=True)
    resumed.load_state_dict(checkpoint["model_state_dict"])
    resumed_opt.load_state_dict(checkpoint["optimizer_state_dict"])
    assert checkpoint["epoch"] == 6 and checkpoint["loss"] == losses[-1]

    model.train()
    resumed.train()
    more = train(model, optimizer, inputs, labels, 3)
    assert train(resumed, resumed_opt, inputs, labels, 3) == more  # momentum came along
    assert more[-1] < losses[0]
