"""Inputs that fail before anything starts (exit 2, `file:line: key: message`), Hydra's
override grammar, and a dry run that reproduces the resolved config (issue 11, items 9-11)."""
import os
import re
import subprocess

import pytest
import yaml

from dtrain.launcher import config as cfgmod
from dtrain.launcher.exit_codes import MEANING, ExitCode

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


@pytest.mark.parametrize("args, message", [
    (["trainer.epochs=-1"], "command line override 'trainer.epochs=-1': trainer.epochs: -1 "
                            "must be > 0"),
    (["data.eval_batch_size=-1"], "command line override 'data.eval_batch_size=-1': "
                                  "data.eval_batch_size: -1 must be > 0"),
    (["--nproc-per-node", "0"], "--nproc-per-node: must be >= 1, got 0"),
    (["--nproc-per-node", "-2"], "--nproc-per-node: must be >= 1, got -2"),
    (["--grace-period", "-1"], "--grace-period: must be >= 0 seconds, got -1.0"),
    (["trainer.device=cuda"], "trainer.device: cuda asked for, but no CUDA GPU is visible"),
    (["model.name=null", "model.target=no_such_module:build"],
     "model.target: cannot import 'no_such_module:build': ModuleNotFoundError"),
    (["model.name=null", "model.target=json:not_there"],
     "model.target: cannot import 'json:not_there': AttributeError"),
    (["trainer.resume=/no/such/run"], "trainer.resume: /no/such/run: no such checkpoint or"),
    (["data.val_split=1.5"], "data.val_split: 1.5 must be in [0, 1)"),
    (["trainer.on_nonfinite=explode"], "trainer.on_nonfinite: 'explode' must be one of"),
    (["+optimizer.momentum=0.5"], "cannot add optimizer.momentum: it is already set (to 0.9)"),
    (["~optimizer.nesterov"], "cannot delete optimizer.nesterov: no such key"),
])
def test_bad_input_is_exit_2_before_a_rank_starts(dtrain_cli, configs, tmp_path, args,
                                                  message):
    if "cuda" in args[0]:
        import dtrain as dt
        if dt.cuda.is_available():
            pytest.skip("a GPU is visible")
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml", f"experiment.output_dir={tmp_path}",
                      *args)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "[rank" not in proc.stdout
    assert not list(tmp_path.glob("version_*"))


def test_unwritable_output_dir_is_one_line(dtrain_cli, configs, tmp_path):
    (tmp_path / "a-file").write_text("")
    proc = dtrain_cli("launch", configs / "digits_mlp.yaml",
                      f"experiment.output_dir={tmp_path / 'a-file' / 'runs'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "experiment.output_dir: cannot write to" in \
        proc.stderr and "Not a directory" in proc.stderr


def test_slurm_submission_is_validated_before_sbatch(dtrain_cli, configs, tmp_path):
    proc = dtrain_cli("slurm", configs / "cifar10_resnet20.yaml", "trainer.epochs=-1",
                      "--dry-run")
    assert proc.returncode == 2 and "trainer.epochs: -1 must be > 0" in proc.stderr
    (tmp_path / "a-file").write_text("")
    for bad, message in [(f"experiment.output_dir={tmp_path / 'a-file' / 'x'}",
                          "experiment.output_dir: cannot write to"),
                         ("trainer.resume=/no/such.dtrain", "trainer.resume: /no/such.dtrain: "
                                                            "no such checkpoint or")]:
        proc = dtrain_cli("slurm", configs / "digits_mlp.yaml", bad)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_yaml_1_2_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: mlp}\ndata: {dataset: digits}\noptimizer: {lr: 1e-3, "
                    "eps: 5E-8}\ntrainer: {max_steps: 1}\n")
    cfg, _ = cfgmod.load_config(path, ["+optimizer.weight_decay=1e-4"])
    assert cfg.optimizer.lr == 0.001 and cfg.optimizer.kwargs == {"eps": 5e-8,
                                                                  "weight_decay": 1e-4}
    assert cfgmod.parse("1e3") == 1000.0 and cfgmod.parse("v1e3") == "v1e3"


def test_hydra_override_grammar(configs):
    base = configs / "digits_mlp.yaml"
    cfg, _ = cfgmod.load_config(base, ["optimizer.name=adam", "~optimizer.momentum",
                                       "+optimizer.amsgrad=true", "++optimizer.lr=0.01",
                                       "++trainer.keep_last=5", "~scheduler",
                                       "~optimizer.weight_decay=0.0001"])
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 0.01
    assert cfg.optimizer.kwargs == {"amsgrad": True}
    assert cfg.trainer.keep_last == 5 and cfg.scheduler is None
    with pytest.raises(cfgmod.ConfigError, match="its value is 0.0001, not 0.5"):
        cfgmod.load_config(base, ["~optimizer.weight_decay=0.5"])
    with pytest.raises(cfgmod.ConfigError, match="expected key.path=value"):
        cfgmod.load_config(base, ["optimizer.lr"])


def test_launch_help_documents_grammar_names_and_exit_codes(dtrain_cli):
    text = dtrain_cli("launch", "--help").stdout
    for part in ["~key.path", "+key.path=value", "++key.path=value", "built-in models: mlp",
                 "optimizers: sgd, adam", "schedulers: step", "data sets: digits",
                 "transforms: to_tensor", "143 SIGTERM", "trainer.resume=auto|latest|PATH"]:
        assert part in text, part
    for code in ExitCode:
        assert f"{int(code)}     {MEANING[code]}" in text


def test_readme_exit_code_table_matches_the_enum():
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", open(README).read(), re.M))
    assert {int(k) for k in rows if int(k) < 128} == {int(c) for c in ExitCode}
    for code in ExitCode:
        assert rows[str(int(code))] == MEANING[code]


def test_dry_run_command_reproduces_this_resolved_config(dtrain_cli, configs, tmp_path):
    out = tmp_path / "runs"
    dry = dtrain_cli("launch", configs / "digits_mlp.yaml", f"experiment.output_dir={out}",
                     "optimizer.lr=0.05", "trainer.max_steps=7", "trainer.progress=false",
                     "--dry-run")
    assert dry.returncode == 0, dry.stderr
    written = re.search(r"# the resolved config: (\S+)", dry.stdout).group(1)
    resolved = yaml.safe_load(open(written))
    assert resolved["optimizer"]["lr"] == 0.05 and resolved["trainer"]["max_steps"] == 7
    assert f"trainer {written}" in dry.stdout
    # another dry run with other overrides refers to another file: never a stale one
    other = dtrain_cli("launch", configs / "digits_mlp.yaml", f"experiment.output_dir={out}",
                       "optimizer.lr=0.2", "--dry-run")
    assert written not in other.stdout and written in dry.stdout
    # the printed lines, run as a job script, train exactly this config
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMP_")}
    ran = subprocess.run(["bash", "-c", dry.stdout], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**env, "DTRAIN_RUN_ID": "job-1"})
    assert ran.returncode == 0, ran.stderr
    assert "summary: completed; 7/7 steps" in ran.stdout
    saved = yaml.safe_load((out / "job-1" / "config.yaml").read_text())
    assert saved["optimizer"]["lr"] == 0.05
