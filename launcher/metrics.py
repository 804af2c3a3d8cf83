"""Run metrics: `metrics.jsonl` (one JSON record a line, the source of truth) and
`metrics.csv` (the same values, one column per field of `COLUMNS`), with
`trainer.tensorboard` also TensorBoard event files (tags `<field>/<split>`, such as
`loss/train`); `dtrain plot`.

JSON has no NaN or infinity, so a non-finite value is written as `null` and the record
names it under `nonfinite`, with what it was (the spelling `float()` reads back):
`{"step": 70, "split": "train", "loss": null, "nonfinite": {"loss": "nan"}, ...}`. The CSV
leaves such a cell empty. A killed job can leave a torn last line; `read` skips it.
"""
import csv
import json
import math
import numbers
import os
import sys
from pathlib import Path

# The fields a record may hold, in CSV column order (the CSV header is this list).
COLUMNS = ["step", "epoch", "split", "loss", "accuracy", "grad_norm", "lr", "samples_per_s",
           "elapsed_s"]
CURVES = ["loss", "accuracy", "grad_norm", "lr", "samples_per_s"]  # TensorBoard's scalars
SPLITS = ("train", "val", "test")


def _clean(record):
    """`record` with numpy scalars (or one-element tensors) as Python numbers, and non-finite
    numbers as None, named under `nonfinite`."""
    out, bad = {}, {}
    for key, value in record.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            bad[key], value = str(value), None
        out[key] = value
    return {**out, "nonfinite": bad} if bad else out


def _json(record):
    return json.dumps(record, allow_nan=False)


def _csv_row(record):
    return ["" if record.get(c) is None else record[c] for c in COLUMNS]


def _replace(path, write):
    """Write a file through `write(f)` into a temporary sibling, then rename it over `path`
    (a reader or a kill never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MetricsWriter:
    """Append records to both files of a run directory (only an enabled writer, rank 0,
    touches them). Opening an existing run rewrites both files, once, from the readable
    JSONL records, so what a killed job left (a torn line, a CSV row short, an older CSV
    header) is repaired before new records follow; with `through_step`, the records of later
    steps are dropped too (a run resumed from the checkpoint of that step writes them
    again). With `tensorboard`, the CURVES of each record also go to event files in the
    run directory (those of steps after `through_step` hidden there); `close` ends them."""

    def __init__(self, run_dir, enabled=True, through_step=None, tensorboard=False):
        self.enabled = enabled
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"
        self.events = None
        if not enabled:
            return
        if tensorboard:
            from dtrain.utils.tensorboard import SummaryWriter

            self.events = SummaryWriter(run_dir, purge_step=None if through_step is None
                                        else through_step + 1)
        if self.jsonl.exists():
            self._rewrite([r for r in read(run_dir) if through_step is None
                           or r.get("step", 0) <= through_step])
        else:
            _replace(self.csv, lambda f: csv.writer(f).writerow(COLUMNS))

    def _rewrite(self, records):
        _replace(self.jsonl, lambda f: f.writelines(_json(r) + "\n" for r in records))

        def write_csv(f):
            out = csv.writer(f)
            out.writerow(COLUMNS)
            out.writerows(_csv_row(r) for r in records)
        _replace(self.csv, write_csv)

    def write(self, step, split, **values):
        """One record: `step`, `split` (one of SPLITS) and any other fields of COLUMNS."""
        if split not in SPLITS:
            raise ValueError(f"metrics: split {split!r} is not one of {', '.join(SPLITS)}")
        unknown = sorted(set(values) - set(COLUMNS))
        if unknown:
            raise ValueError(f"metrics: unknown field(s) {', '.join(unknown)}; the fields are "
                             f"{', '.join(COLUMNS)} (add new ones to metrics.COLUMNS)")
        if not self.enabled:
            return
        given = {"step": step, "split": split, **values}
        record = _clean({c: given[c] for c in COLUMNS if c in given})
        line = _json(record) + "\n"
        with self.jsonl.open("a") as f:
            f.write(line)
        with self.csv.open("a", newline="") as f:
            csv.writer(f).writerow(_csv_row(record))
        if self.events is not None:
            for name in CURVES:
                if record.get(name) is not None:
                    self.events.add_scalar(f"{name}/{split}", record[name], step)

    def close(self):
        """Write the pending TensorBoard events and close their file."""
        if self.events is not None:
            self.events.close()


def read(run_dir):
    """The records of RUN_DIR/metrics.jsonl (non-finite values as None, see above). A line
    that is not JSON, such as the torn last line of a killed job, is skipped with a warning
    on stderr."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics in this run directory")
    records = []
    lines = path.read_text(errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            what = "torn last line (a killed job?)" if n == len(lines) else "line that is not " \
                "a JSON record"
            sys.stderr.write(f"dtrain: {path}:{n}: skipping a {what}: {line[:60]!r}\n")
            continue
        records.append(_clean(record))  # files of older versions hold bare NaN
    return records


def first_nonfinite(records):
    """(step, split, names) of the first record holding a non-finite value, or None."""
    for r in records:
        names = sorted(r.get("nonfinite") or {})
        if not names and "loss" in r and r["loss"] is None:
            names = ["loss"]
        if names:
            return r.get("step"), r.get("split"), names
    return None


def plot(run_dir):
    """Draw loss and accuracy curves to RUN_DIR/curves.png (needs matplotlib); a vertical
    line marks the step of the first non-finite value (loss or gradient norm)."""
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
    if not records:
        sys.stderr.write(f"dtrain plot: {Path(run_dir) / 'metrics.jsonl'}: no records yet\n")
        return 2
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, (split, style) in enumerate(zip(SPLITS, ("-", "s-", "o-"))):
        rows = [r for r in records if r.get("split") == split and r.get("step") is not None]
        for ax, key in zip(axes, ("loss", "accuracy")):
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, color=f"C{i}", label=split)
    bad = first_nonfinite(records)
    if bad is not None:
        label = f"non-finite {', '.join(bad[2])} at step {bad[0]} ({bad[1]})"
        axes[0].axvline(bad[0], color="red", linestyle="--", label=label)
        print(label)
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    if losses and min(losses) > 0 and max(losses) > 1e3 * min(losses):
        axes[0].set_yscale("log")  # a blow-up would flatten the rest of the curve
    for ax, name in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    out = Path(run_dir) / "curves.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)
    return 0
