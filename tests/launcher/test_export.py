"""`dtrain export RUN_DIR --format onnx`: a real short run of a built-in config, exported and
run by ONNX Runtime, equals the trained model rebuilt from the run's checkpoint."""
import numpy as np
import pytest

import dtrain as dt
from dtrain.launcher import config as cfgmod
from dtrain.launcher import registry
from dtrain.launcher.models import build_model
from dtrain.launcher.rundir import Checkpoints, load_full

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_export_a_trained_run(dtrain_cli, configs, tmp_path):
    runs = tmp_path / "runs"
    proc = dtrain_cli("launch", configs / "digits_cnn.yaml", "trainer.max_steps=12",
                      "trainer.checkpoint_every=6", f"experiment.output_dir={runs}",
                      "distributed.nproc_per_node=1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "lenet.onnx"
    proc = dtrain_cli("export", runs, "--format", "onnx", "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "step 12" in proc.stdout

    run = runs / "latest"
    cfg, _ = cfgmod.load_config(run / "config.yaml")
    _, test_ds, in_shape, classes, _ = registry.build_datasets(cfg.data, cfg.experiment.seed)
    model = build_model(cfg.model, in_shape, classes)
    state = load_full(Checkpoints(run).newest(), ["model"])
    assert state["step"] == 12
    model.load_state_dict(state["model"])
    model.eval()
    x = dt.stack([dt.as_tensor(test_ds[i][0]) for i in range(5)])  # traced with 2
    got, = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})
    with dt.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_export_needs_a_run_with_a_checkpoint(dtrain_cli, tmp_path):
    proc = dtrain_cli("export", tmp_path)
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
    (tmp_path / "config.yaml").write_text("experiment: {name: x}\n")
    proc = dtrain_cli("export", tmp_path)
    assert proc.returncode == 2 and "no complete checkpoint" in proc.stderr
