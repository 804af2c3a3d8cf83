"""A PyTorch-style CNN classifier script (the shape of pytorch/examples' mnist/main.py) run on
dtrain with only the import changed: device picked through `torch.accelerator`, cuDNN
autotuning switched on, data through `torch.utils.data`, the 8x8 digits for MNIST."""
import dtrain as torch
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.data.datasets import Digits
from dtrain.optim.lr_scheduler import StepLR
from dtrain.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(128, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))            # 8x8 -> 6x6
        x = F.relu(self.conv2(x))            # -> 4x4
        x = F.max_pool2d(x, 2)               # -> 2x2
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def train(model, device, loader, optimizer):
    model.train()
    losses = []
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def evaluate(model, device, loader):
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return test_loss / len(loader.dataset), correct / len(loader.dataset)


def main():
    torch.manual_seed(1)
    device = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() \
        else "cpu"
    torch.backends.cudnn.benchmark = True
    train_set, test_set = Digits(train=True), Digits(train=False)
    train_loader = DataLoader(TensorDataset(torch.tensor(train_set.data),
                                            torch.tensor(train_set.targets)),
                              batch_size=64, shuffle=True)
    test_loader = DataLoader(TensorDataset(torch.tensor(test_set.data),
                                           torch.tensor(test_set.targets)), batch_size=256)
    model = Net().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    history = [evaluate(model, device, test_loader)]
    for _epoch in range(3):
        train(model, device, train_loader, optimizer)
        history.append(evaluate(model, device, test_loader))
        scheduler.step()
    return device, history, optimizer.param_groups[0]["lr"]


def test_cnn_script_trains_on_the_accelerator_or_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the script
    device, history, lr = main()
    assert torch.backends.cudnn.benchmark is True
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    losses = [loss for loss, _ in history]
    assert losses[0] > 2.0                             # untrained: about ln(10)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.35 and history[-1][1] > 0.9, history
    assert abs(lr - 1e-2 * 0.7 ** 3) < 1e-12
