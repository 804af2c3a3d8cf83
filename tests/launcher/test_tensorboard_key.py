"""`trainer.tensorboard: true`: rank 0 writes the run's curves as TensorBoard events into the
run directory, read back with TensorBoard's EventAccumulator."""
import importlib.util

import pytest

from dtrain.launcher import checks, metrics
from dtrain.launcher import config as cfgmod
from dtrain.launcher.metrics import CURVES, MetricsWriter

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
pytest.importorskip("tensorboardX")


def _events(run_dir):
    acc = event_accumulator.EventAccumulator(str(run_dir))
    acc.Reload()
    return acc


def test_two_rank_launch_writes_the_metrics_as_events(dtrain_cli, configs, tmp_path):
    proc = dtrain_cli("launch", "--nproc-per-node", "2", configs / "digits_mlp.yaml",
                      f"experiment.output_dir={tmp_path / 'runs'}", "trainer.epochs=2",
                      "trainer.log_every=5", "trainer.tensorboard=true", timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "version_0"
    assert "world: 2 ranks" in proc.stdout
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # rank 0 only
    acc = _events(run_dir)
    assert sorted(acc.Tags()["scalars"]) == sorted(
        ["loss/train", "grad_norm/train", "lr/train", "samples_per_s/train", "loss/test",
         "accuracy/test"])
    records = metrics.read(run_dir)
    for tag in acc.Tags()["scalars"]:
        name, split = tag.split("/")
        expected = [(r["step"], pytest.approx(r[name], rel=1e-6)) for r in records
                    if r["split"] == split and r.get(name) is not None]
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == expected, tag
    train = [r for r in records if r["split"] == "train"]
    assert len(train) >= 4 and train[-1]["loss"] < train[0]["loss"]
    assert acc.Scalars("accuracy/test")[-1].value > 0.5  # 2 epochs of 15


def test_resumed_run_hides_the_events_it_writes_again(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=True)
    for step in (10, 20, 30):
        w.write(step=step, epoch=0, split="train", loss=1.0 / step, lr=0.1)
    w.close()
    w = MetricsWriter(tmp_path, through_step=20, tensorboard=True)  # resumed from step 20
    w.write(step=30, epoch=0, split="train", loss=5.0, lr=0.05)
    w.close()
    acc = _events(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("loss/train")] == [
        (10, pytest.approx(0.1)), (20, pytest.approx(0.05)), (30, 5.0)]
    assert [(e.step, e.value) for e in acc.Scalars("lr/train")] == [
        (10, pytest.approx(0.1)), (20, pytest.approx(0.1)), (30, pytest.approx(0.05))]
    assert set(CURVES) < set(metrics.COLUMNS)


def test_key_is_declared_once_and_checked(tmp_path, configs, monkeypatch):
    cfg, where = cfgmod.load_config(configs / "digits_mlp.yaml",
                                    ["trainer.tensorboard=true",
                                     f"experiment.output_dir={tmp_path}"])
    assert cfg.trainer.tensorboard is True and cfgmod.defaults("trainer")["tensorboard"] is False
    with pytest.raises(cfgmod.ConfigError, match=r"trainer.tensorboard: expected true/false"):
        cfgmod.load_config(configs / "digits_mlp.yaml", ["trainer.tensorboard=often"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    with pytest.raises(cfgmod.ConfigError, match=r"trainer.tensorboard: TensorBoard events need "
                                                 r"tensorboardX: pip install"):
        checks.check_launch(cfg, where)
