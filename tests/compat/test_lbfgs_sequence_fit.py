"""A PyTorch user's script, unchanged apart from the import: an LSTM learns to continue a
sine wave from sliding windows, trained with L-BFGS and a closure (as in PyTorch's
time-sequence-prediction example)."""
import math

import dtrain as torch
from dtrain import nn


class SinePredictor(nn.Module):
    def __init__(self, hidden=12):
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x.unsqueeze(-1))
        return self.head(out[:, -1])


def test_lbfgs_fits_a_sine_sequence():
    torch.manual_seed(0)
    t = torch.linspace(0, 6 * math.pi, 200, dtype=torch.float64)
    wave = torch.sin(t)
    window = 8
    inputs = torch.stack([wave[i:i + window] for i in range(len(wave) - window)])
    targets = wave[window:].unsqueeze(1)

    model = SinePredictor().double()
    criterion = nn.MSELoss()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.8)

    def closure():
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        return loss

    with torch.no_grad():
        initial = criterion(model(inputs), targets).item()
    losses = [optimizer.step(closure).item() for _ in range(4)]
    with torch.no_grad():
        final = criterion(model(inputs), targets).item()

    assert losses[0] == initial  # step returns the closure's loss before the update
    assert final < initial / 1e4, (initial, losses, final)  # 0.54 -> ~2e-7
    assert optimizer.state_dict()["state"][0]["n_iter"] > 4  # several iterations per step
