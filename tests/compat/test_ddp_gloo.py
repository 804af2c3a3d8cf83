"""The official DDP tutorial's script shape (`init_process_group("gloo")`, `DDP` from
`torch.nn.parallel`, a toy model, backward, step, rank 0 prints) on dtrain with only the
import changed, run under `dtrain launch --nproc-per-node 2`."""
import re

SCRIPT = '''
import hashlib

import numpy as np

import dtrain as torch
import dtrain.distributed as dist
import dtrain.nn as nn
import dtrain.optim as optim
from dtrain.nn.parallel import DistributedDataParallel as DDP


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net1 = nn.Linear(10, 10)
        self.relu = nn.ReLU()
        self.net2 = nn.Linear(10, 5)

    def forward(self, x):
        return self.net2(self.relu(self.net1(x)))


def shard(rank):
    g = torch.Generator().manual_seed(1000 + rank)
    x = torch.randn(20, 10, generator=g)
    return x, 0.5 * x[:, :5] - x[:, 5:]


def train(model, batches, steps=50):
    loss_fn = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=0.2)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum(loss_fn(model(x), y) for x, y in batches) / len(batches)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def checksum(model):
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def demo_basic():
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    print(f"Running basic DDP example on rank {rank} (backend {dist.get_backend()}).")
    torch.manual_seed(rank)              # each rank builds different weights: DDP syncs them
    model = ToyModel()
    ddp_model = DDP(model)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train(ddp_model, [shard(rank)])
    mean_loss = torch.tensor([losses[0], losses[-1]])
    dist.all_reduce(mean_loss)
    print(f"CHECKSUM {checksum(model)}")
    if rank == 0:
        # one process on all ranks' data, from the same start, takes the same steps
        reference = ToyModel()
        torch.manual_seed(0)
        reference.load_state_dict(ToyModel().state_dict())
        assert all(torch.equal(reference.state_dict()[k], v) for k, v in initial.items())
        train(reference, [shard(r) for r in range(world_size)])
        diff = max(np.abs(a.detach().numpy() - b.detach().numpy()).max()
                   for a, b in zip(model.parameters(), reference.parameters()))
        first, last = (mean_loss / world_size).tolist()
        print(f"LOSS {first:.6f} {last:.6f} DIFF {diff:.3e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    demo_basic()
'''


def test_ddp_tutorial_script_on_gloo(dtrain_cli, tmp_path):
    (tmp_path / "ddp_tutorial.py").write_text(SCRIPT)
    proc = dtrain_cli("launch", "--nproc-per-node", "2", "ddp_tutorial.py")
    assert proc.returncode == 0, proc.stderr
    for r in (0, 1):
        assert f"Running basic DDP example on rank {r} (backend gloo)." in proc.stdout
    sums = re.findall(r"\[rank (\d)\] CHECKSUM (\w+)", proc.stdout)
    assert sorted(r for r, _ in sums) == ["0", "1"] and sums[0][1] == sums[1][1], proc.stdout
    first, last, diff = map(float, re.search(r"LOSS (\S+) (\S+) DIFF (\S+)", proc.stdout).groups())
    assert last < 0.5 * first, (first, last)
    assert diff < 1e-5       # DDP's averaged gradients = the full batch's, up to float32 sums
