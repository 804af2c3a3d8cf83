"""Config loading and validation: errors name the file, line and key path; exit code 2."""
import dataclasses

import pytest

from dtrain.launcher import config as cfgmod
from dtrain.launcher.hostlist import expand


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = """\
experiment:
  name: t
model:
  name: mlp
data:
  dataset: digits
  batch_size: 16
optimizer:
  name: sgd
  lr: 0.1
trainer:
  epochs: 1
"""


def test_valid_config_gets_defaults(tmp_path):
    cfg, _ = cfgmod.load_config(write(tmp_path, "c.yaml", BASE))
    assert cfg.data.batch_size == 16 and cfg.data.num_workers == 0
    assert cfg.experiment.output_dir == "runs/t" and cfg.scheduler is None
    assert cfg.distributed.bucket_cap_mb == 25 and cfg.trainer.resume is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trainer.epochs = 3


@pytest.mark.parametrize("text, message", [
    (BASE.replace("batch_size: 16", "batch_sise: 16"),
     "c.yaml:7: data.batch_sise: unknown key; did you mean 'batch_size'?"),
    (BASE.replace("batch_size: 16", "batch_size: sixteen"),
     "c.yaml:7: data.batch_size: expected integer, got 'sixteen'"),
    (BASE.replace("batch_size: 16", "batch_size: -4"),
     "c.yaml:7: data.batch_size: -4 must be > 0"),
    (BASE.replace("  lr: 0.1\n", ""), "c.yaml:8: optimizer.lr: missing required value"),
    (BASE + "trainr:\n  epochs: 2\n", "c.yaml:13: trainr: unknown section; did you mean "
                                      "'trainer'?"),
    (BASE.replace("epochs: 1", "epochs: true"), "c.yaml:12: trainer.epochs: expected integer "
                                                "or null, got True"),
    (BASE.replace("data:\n", "data: [\n"), "c.yaml:7: invalid YAML: expected ',' or ']'"),
])
def test_errors_name_file_line_and_key_path(tmp_path, text, message):
    path = write(tmp_path, "c.yaml", text)
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.load_config(path)
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_includes_env_interpolation_and_typed_overrides(tmp_path, monkeypatch):
    write(tmp_path, "base.yaml", BASE)
    path = write(tmp_path, "c.yaml", "defaults: [base.yaml]\ndata:\n  root: ${env:DT_ROOT,/x}\n"
                                     "  num_workers: ${env:DT_WORKERS,0}\n")
    monkeypatch.setenv("DT_WORKERS", "2")
    cfg, where = cfgmod.load_config(path, ["trainer.epochs=3", "optimizer.momentum=0.9",
                                           "trainer.clip_grad_norm=null",
                                           "data.transforms=[to_tensor]",
                                           "trainer.amp=true"])
    assert cfg.data.root == "/x" and cfg.data.num_workers == 2
    assert cfg.data.batch_size == 16   # from the included file
    assert cfg.trainer.epochs == 3 and cfg.optimizer.kwargs == {"momentum": 0.9}
    assert cfg.trainer.clip_grad_norm is None and cfg.trainer.amp is True
    assert cfg.data.transforms == ["to_tensor"]
    assert str(where["data.batch_size"]).endswith("base.yaml:7")
    with pytest.raises(cfgmod.ConfigError, match="environment variable NOPE_X is not set"):
        cfgmod.load_config(write(tmp_path, "d.yaml", BASE + "slurm:\n  partition: "
                                                    "${env:NOPE_X}\n"))


def test_cli_exit_code_2_and_registry_checks(dtrain_cli, tmp_path):
    bad = write(tmp_path, "bad.yaml", BASE.replace("name: mlp", "name: mlpp"))
    proc = dtrain_cli("launch", bad)
    assert proc.returncode == 2
    assert "bad.yaml:4: model.name: unknown model 'mlpp'" in proc.stderr
    proc = dtrain_cli("launch", write(tmp_path, "o.yaml", BASE.replace(
        "lr: 0.1", "lr: 0.1\n  betas: [0.9, 0.99]")))
    assert proc.returncode == 2 and "optimizer.betas: unknown key for SGD" in proc.stderr
    proc = dtrain_cli("config", tmp_path / "missing.yaml")
    assert proc.returncode == 2 and "config file not found" in proc.stderr
    proc = dtrain_cli("config", write(tmp_path, "ok.yaml", BASE), "trainer.epochs=4")
    assert proc.returncode == 0 and "epochs: 4" in proc.stdout


def test_every_shipped_config_is_valid(dtrain_cli, configs):
    for path in sorted(configs.glob("*.yaml")):
        proc = dtrain_cli("config", path)
        assert proc.returncode == 0, (path, proc.stderr)


@pytest.mark.parametrize("text, hosts", [
    ("node[01-04,07],gpu-a[1-2]", ["node01", "node02", "node03", "node04", "node07",
                                   "gpu-a1", "gpu-a2"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[008-010]", ["n008", "n009", "n010"]),
    ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
    ("a,b,c", ["a", "b", "c"]),
    ("solo", ["solo"]),
])
def test_hostlist_expansion(text, hosts):
    assert expand(text) == hosts


@pytest.mark.parametrize("text", ["n[1-", "n]1[", "n[3-1]", "n[a-b]"])
def test_hostlist_errors(text):
    with pytest.raises(ValueError, match="hostlist"):
        expand(text)
