"""DataLoader throughput, dtrain vs PyTorch (when importable), as JSON.

Batches of 128 samples of 3x32x32 float32 (SyntheticClassification, generated per sample)
through a light transform (random horizontal flip + normalize), shuffled, num_workers 0 and
2 (persistent workers). Both loaders read the very same data set object, so the figures
compare the loading machinery. Reported: samples/s over a whole epoch (best of `REPEAT`
after one warm-up epoch), and the first epoch's time including worker start-up.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, emit, try_torch  # noqa: E402

import dtrain as dt  # noqa: E402
from dtrain.data import transforms as T  # noqa: E402
from dtrain.data.datasets import SyntheticClassification  # noqa: E402

BATCH = 128
NUM_SAMPLES = BATCH * 24
REPEAT = 3


class Transformed(dt.data.Dataset):
    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return self.transform(x), y


def measure(make_loader, num_workers):
    loader = make_loader(num_workers)
    start = time.perf_counter()

    def epoch():
        for x, _ in loader:
            assert tuple(x.shape) in ((BATCH, 3, 32, 32), (NUM_SAMPLES % BATCH, 3, 32, 32))
    epoch()
    first = time.perf_counter() - start
    return {"samples_per_s": NUM_SAMPLES / best_time(epoch, repeat=REPEAT, warmup=0),
            "first_epoch_s": first}


def main():
    data = Transformed(SyntheticClassification(NUM_SAMPLES, (3, 32, 32), 10, seed=0),
                       T.Compose([T.RandomHorizontalFlip(), T.Normalize([0.5] * 3, [0.25] * 3)]))
    result = {"batch_size": BATCH, "num_samples": NUM_SAMPLES, "dtrain": {}, "torch": None}

    def dtrain_loader(nw):
        return dt.data.DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=nw,
                                  persistent_workers=nw > 0)
    for nw in (0, 2):
        result["dtrain"][f"num_workers_{nw}"] = measure(dtrain_loader, nw)
    torch = try_torch()
    if torch is not None:
        def torch_loader(nw):
            return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True,
                                               num_workers=nw, persistent_workers=nw > 0)
        result["torch"] = {"version": torch.__version__}
        for nw in (0, 2):
            result["torch"][f"num_workers_{nw}"] = measure(torch_loader, nw)
    emit(result)


if __name__ == "__main__":
    main()
