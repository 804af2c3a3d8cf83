"""Run metrics: `metrics.jsonl` (one record a line) and `metrics.csv`; `dtrain plot`."""
import csv
import json
import sys
from pathlib import Path

COLUMNS = ["step", "epoch", "split", "loss", "accuracy", "lr", "samples_per_s", "elapsed_s"]


class MetricsWriter:
    """Append records to both files of a run directory (rank 0 only writes)."""

    def __init__(self, run_dir, enabled=True):
        self.enabled = enabled
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"
        if enabled and not self.csv.exists():
            with self.csv.open("w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)

    def write(self, **record):
        if not self.enabled:
            return
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        with self.csv.open("a", newline="") as f:
            csv.writer(f).writerow([record.get(c, "") for c in COLUMNS])


def read(run_dir):
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics in this run directory")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(run_dir):
    """Draw loss and accuracy curves to RUN_DIR/curves.png (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write("dtrain plot needs matplotlib: pip install 'dtrain[plot]'\n")
        return 2
    try:
        records = read(run_dir)
    except FileNotFoundError as err:
        sys.stderr.write(f"dtrain plot: {err}\n")
        return 2
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("test", "o-")):
        rows = [r for r in records if r["split"] == split]
        if rows:
            axes[0].plot([r["step"] for r in rows], [r["loss"] for r in rows], style,
                         label=split)
            acc = [r for r in rows if r.get("accuracy") is not None]
            if acc:
                axes[1].plot([r["step"] for r in acc], [r["accuracy"] for r in acc], style,
                             label=split)
    for ax, name in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.legend()
    out = Path(run_dir) / "curves.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)
    return 0
