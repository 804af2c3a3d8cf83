"""dt.utils.tensorboard.SummaryWriter: event files read back with TensorBoard's own
EventAccumulator."""
import itertools
import os
import socket
import sys

import numpy as np
import pytest

import dtrain as dt
from dtrain.utils import tensorboard
from dtrain.utils.tensorboard import SummaryWriter

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
pytest.importorskip("tensorboardX")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def _events(log_dir):
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_scalars_histogram_and_text(tmp_path):
    values = dt.randn(1000)
    with SummaryWriter(tmp_path) as w:
        for step in range(4):
            w.add_scalar("loss/train", dt.tensor(2.0) / (step + 1), step)
        w.add_scalar("lr", 0.125, 0)
        w.add_histogram("weights", values, 7)
        w.add_text("note", "dtrain run", 2)
        assert w.get_logdir() == str(tmp_path)
    acc = _events(tmp_path)
    assert _scalars(acc, "loss/train") == [(0, 2.0), (1, 1.0), (2, pytest.approx(2 / 3)),
                                           (3, 0.5)]
    assert _scalars(acc, "lr") == [(0, 0.125)]
    (hist,) = acc.Histograms("weights")
    v = values.numpy().astype(np.float64)
    assert hist.step == 7 and hist.histogram_value.num == 1000
    assert hist.histogram_value.sum == pytest.approx(v.sum(), rel=1e-5)
    assert hist.histogram_value.min == pytest.approx(v.min())
    assert hist.histogram_value.max == pytest.approx(v.max())
    (text,) = acc.Tensors("note/text_summary")
    assert text.step == 2 and text.tensor_proto.string_val == [b"dtrain run"]


def test_add_scalars_writes_one_run_per_tag_as_pytorch(tmp_path):
    with SummaryWriter(tmp_path) as w:
        for step in range(3):
            w.add_scalars("loss/all", {"train": 1.0 - step / 10, "val": dt.tensor(2.0 + step)},
                          step)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["loss_all_train",
                                                                       "loss_all_val"]
    assert _scalars(_events(tmp_path / "loss_all_train"), "loss/all") == [
        (0, 1.0), (1, pytest.approx(0.9)), (2, pytest.approx(0.8))]
    assert _scalars(_events(tmp_path / "loss_all_val"), "loss/all") == [(0, 2.0), (1, 3.0),
                                                                       (2, 4.0)]


def test_add_hparams_records_a_session(tmp_path):
    with SummaryWriter(tmp_path) as w:
        w.add_hparams({"lr": 0.1, "optimizer": "sgd", "layers": dt.tensor(3), "amp": False},
                      {"hparam/accuracy": dt.tensor(0.75)}, run_name="trial1")
        with pytest.raises(TypeError, match="should be dictionary"):
            w.add_hparams([("lr", 0.1)], {})
        with pytest.raises(NotImplementedError, match="hparam_domain_discrete"):
            w.add_hparams({"a": "x"}, {}, hparam_domain_discrete={"a": ["x", "y"]})
    acc = _events(tmp_path / "trial1")
    assert _scalars(acc, "hparam/accuracy") == [(0, 0.75)]
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in start.hparams.items()} == {"lr": 0.1, "optimizer": "sgd", "layers": 3,
                                                   "amp": False}


def test_flush_writes_pending_events_before_close(tmp_path):
    w = SummaryWriter(tmp_path, max_queue=100, flush_secs=3600, filename_suffix=".dt")
    w.add_scalar("x", 1.0, 0)
    w.flush()
    assert _scalars(_events(tmp_path), "x") == [(0, 1.0)]
    w.close()
    assert all(name.endswith(".dt") for name in os.listdir(tmp_path))


def test_purge_step_hides_the_steps_a_resumed_run_writes_again(tmp_path, monkeypatch):
    # the files' counter goes from 9 to 10 (TensorBoard reads files in name order)
    monkeypatch.setattr(tensorboard, "_files", itertools.count(9))
    with SummaryWriter(tmp_path) as w:
        for step in range(5):
            w.add_scalar("loss", float(step), step)
    with SummaryWriter(tmp_path, purge_step=3) as w:
        w.add_scalar("loss", 30.0, 3)
    assert _scalars(_events(tmp_path), "loss") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]


def test_default_log_dir_is_runs_datetime_hostname(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SummaryWriter(comment="_lr0.1") as w:
        w.add_scalar("x", 1.0, 0)
    (run,) = os.listdir(tmp_path / "runs")
    assert run.endswith(f"_{socket.gethostname()}_lr0.1") and w.get_logdir() == \
        os.path.join("runs", run)
    assert _scalars(_events(tmp_path / "runs" / run), "x") == [(0, 1.0)]


def test_missing_tensorboardx_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"needs tensorboardX: pip install "
                                          r"'dtrain\[tensorboard\]'"):
        SummaryWriter(tmp_path)
