"""launcher/metrics.py: strict JSON for non-finite values, torn lines, truncation on resume,
the CSV columns, and `dtrain plot` marking a non-finite loss."""
import csv
import json

import numpy as np
import pytest

import dtrain as dt
from dtrain.launcher import metrics
from dtrain.launcher.metrics import COLUMNS, MetricsWriter


def strict(line):
    """json.loads that refuses NaN/Infinity, as strict JSON readers (jq, JavaScript) do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(line, parse_constant=refuse)


def csv_rows(run_dir):
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.reader(f))


def test_non_finite_values_are_null_and_named(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write(step=1, epoch=0, split="train", loss=0.5, grad_norm=2.0, lr=0.1)
    w.write(step=2, epoch=0, split="train", loss=float("nan"), grad_norm=float("-inf"), lr=0.1)
    first, second = map(strict, (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert "nonfinite" not in first
    assert second == {"step": 2, "split": "train", "epoch": 0, "loss": None, "grad_norm": None,
                      "lr": 0.1, "nonfinite": {"loss": "nan", "grad_norm": "-inf"}}
    header, row1, row2 = csv_rows(tmp_path)
    assert header == COLUMNS
    cell = dict(zip(header, row2))
    assert (cell["loss"], cell["grad_norm"], cell["lr"], cell["accuracy"]) == ("", "", "0.1", "")
    assert dict(zip(header, row1))["grad_norm"] == "2.0"
    assert metrics.read(tmp_path)[1]["nonfinite"] == {"loss": "nan", "grad_norm": "-inf"}


def test_numpy_scalars_and_tensors_are_written_as_numbers(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write(step=np.int64(3), split="train", loss=np.float32(0.5), grad_norm=np.float32("inf"))
    assert strict((tmp_path / "metrics.jsonl").read_text()) == {
        "step": 3, "split": "train", "loss": 0.5, "grad_norm": None,
        "nonfinite": {"grad_norm": "inf"}}
    w.write(step=4, split="train", loss=dt.tensor(float("nan")), accuracy=dt.tensor(0.5))
    assert metrics.read(tmp_path)[1] == {"step": 4, "split": "train", "loss": None,
                                         "accuracy": 0.5, "nonfinite": {"loss": "nan"}}


def test_fields_and_splits_come_from_one_declaration(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write(step=5, epoch=0, split="val", loss=0.3, accuracy=0.9)
    assert csv_rows(tmp_path)[1][:5] == ["5", "0", "val", "0.3", "0.9"]
    with pytest.raises(ValueError, match="unknown field.*grad_nrom.*metrics.COLUMNS"):
        w.write(step=6, split="train", grad_nrom=1.0)
    with pytest.raises(ValueError, match="split 'validation' is not one of train, val, test"):
        w.write(step=6, split="validation", loss=1.0)


def test_read_skips_a_torn_last_line_and_keeps_extra_keys(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "split": "train", "loss": 1.0, "new_key": [1, 2]}\n'
        '{"step": 2, "split": "train", "loss": NaN}\n'          # written by older versions
        '{"step": 3, "split": "train", "lo')
    records = metrics.read(tmp_path)
    assert [r["step"] for r in records] == [1, 2] and records[0]["new_key"] == [1, 2]
    assert records[1]["loss"] is None and records[1]["nonfinite"] == {"loss": "nan"}
    assert "metrics.jsonl:3: skipping a torn last line" in capsys.readouterr().err


def test_reopening_repairs_what_a_killed_job_left(tmp_path, capsys):
    w = MetricsWriter(tmp_path)
    w.write(step=1, epoch=0, split="train", loss=1.0)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "epo')                           # killed mid-line, CSV row lost
    (tmp_path / "metrics.csv").write_text("step,loss\n1,1.0\n")  # an older header
    w = MetricsWriter(tmp_path)
    assert "torn last line" in capsys.readouterr().err
    w.write(step=2, epoch=0, split="train", loss=0.9)
    assert [r["step"] for r in map(strict, (tmp_path / "metrics.jsonl").read_text()
                                   .splitlines())] == [1, 2]
    assert [row[0] for row in csv_rows(tmp_path)] == ["step", "1", "2"]
    assert csv_rows(tmp_path)[0] == COLUMNS
    assert capsys.readouterr().err == ""


def test_through_step_drops_the_steps_a_resumed_run_repeats(tmp_path):
    w = MetricsWriter(tmp_path)
    for step in range(10, 80, 10):
        w.write(step=step, epoch=0, split="train", loss=1.0 / step)
        if step % 20 == 0:
            w.write(step=step, epoch=0, split="test", loss=1.0, accuracy=0.5)
    w = MetricsWriter(tmp_path, through_step=50)  # the resumed run, from step 50
    for step in (60, 70):
        w.write(step=step, epoch=0, split="train", loss=1.0 / step)
    steps = [(r["step"], r["split"]) for r in metrics.read(tmp_path)]
    assert steps == [(10, "train"), (20, "train"), (20, "test"), (30, "train"), (40, "train"),
                     (40, "test"), (50, "train"), (60, "train"), (70, "train")]
    assert [(int(r[0]), r[2]) for r in csv_rows(tmp_path)[1:]] == steps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.jsonl"]


def test_a_disabled_writer_touches_nothing(tmp_path):
    w = MetricsWriter(tmp_path, enabled=False, through_step=0)
    w.write(step=1, split="train", loss=1.0)
    assert list(tmp_path.iterdir()) == []


def test_plot_marks_the_non_finite_loss_and_survives_a_torn_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    w = MetricsWriter(tmp_path)
    for step in range(1, 30):
        w.write(step=step, epoch=0, split="train", loss=1.0 / step)
    w.write(step=10, epoch=0, split="test", loss=0.2, accuracy=0.8)
    w.write(step=30, epoch=0, split="train", loss=float("inf"))
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 31, "split": "val", "loss": 0.1, "future_field": 1}\n{"step": 3')
    assert metrics.plot(tmp_path) == 0
    out = capsys.readouterr()
    assert "non-finite loss at step 30 (train)" in out.out and "torn last line" in out.err
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_plot_without_records_says_so(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert metrics.plot(tmp_path) == 2
    assert "no metrics in this run directory" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "spl')
    assert metrics.plot(tmp_path) == 2
    assert "no records yet" in capsys.readouterr().err
