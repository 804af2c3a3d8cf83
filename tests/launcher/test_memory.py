"""`dtrain estimate-memory`: per-strategy bytes per rank, predicted from the config, and
measured on real ranks with --measure: the prediction within 10 % of the measurement (issue
14)."""
import json

import pytest

import dtrain as dt
from dtrain import nn
from dtrain.launcher import config as cfgmod
from dtrain.launcher import registry
from dtrain.launcher.memory import state_bytes

MLP_PARAMS = 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10  # digits_mlp: 17,226
ADAM = ["optimizer.name=adam", "~optimizer.momentum"]
COLUMNS = ["parameters", "gradients", "optimizer", "activations", "total"]

LM = """\
experiment: {name: lm}
model:
  name: transformer_lm
  args: {d_model: 32, nhead: 2, num_layers: 2, dim_feedforward: 64, dropout: 0.1}
data: {dataset: synthetic_lm, batch_size: 16, args: {num_samples: 256}}
optimizer: {name: adam, lr: 0.001}
trainer: {max_steps: 1}
"""


def estimate(dtrain_cli, config, *args):
    proc = dtrain_cli("estimate-memory", config, *args, "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def assert_within_10_percent(est):
    """Every column of every strategy (the figures of the most loaded rank)."""
    for name, entry in est["strategies"].items():
        for c in COLUMNS:
            pred, got = entry["predicted"][c], entry["measured"][c]
            assert abs(pred - got) <= 0.1 * got, (name, c, pred, got)


def test_measured_on_2_ranks_matches_the_prediction(dtrain_cli, configs):
    est = estimate(dtrain_cli, configs / "digits_mlp.yaml", *ADAM, "--world-size", "2",
                   "--measure")
    assert est["parameters"] == MLP_PARAMS and est["world_size"] == 2
    p = 4 * MLP_PARAMS  # float32
    adam = 2 * p + 6 * 4  # two moments, and a float32 step count per parameter
    pred = {k: v["predicted"] for k, v in est["strategies"].items()}
    assert [pred[s]["parameters"] for s in ("ddp", "zero1", "fsdp")] == [p, p, p / 2]
    assert pred["zero2"]["parameters"] > p  # the shards and the full parameters until backward
    assert [pred[s]["gradients"] for s in ("ddp", "zero1", "zero2", "fsdp")] == \
        [p, p, p / 2, p / 2]
    # ZeroRedundancyOptimizer's partition: the two 8192-element weights on ranks 0 and 1,
    # then the 640-element one on rank 0 (the most loaded rank is shown)
    zero1 = 2 * 4 * (8192 + 640) + 2 * 4
    assert [pred[s]["optimizer"] for s in ("ddp", "zero1", "zero2", "fsdp")] == \
        [adam, zero1, adam / 2, adam / 2]
    assert est["strategies"]["ddp"]["measured"]["optimizer"] == adam
    assert len({v["activations"] for v in pred.values()}) == 1
    assert_within_10_percent(est)


def test_measured_on_4_ranks_with_activation_checkpointing(dtrain_cli, tmp_path):
    config = tmp_path / "lm.yaml"
    config.write_text(LM)
    plain = estimate(dtrain_cli, config, "--world-size", "4")
    est = estimate(dtrain_cli, config, "trainer.activation_checkpointing=true",
                   "--world-size", "4", "--measure")
    assert_within_10_percent(est)
    act = [e["strategies"]["ddp"]["predicted"]["activations"] for e in (plain, est)]
    assert act[1] * 3 < act[0], act
    fsdp = est["strategies"]["fsdp"]["measured"]
    assert fsdp["total"] < est["strategies"]["ddp"]["measured"]["total"] / 2


def test_table_and_errors(dtrain_cli, configs, tmp_path):
    proc = dtrain_cli("estimate-memory", configs / "digits_mlp.yaml", "data.batch_size=64")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "mlp: 17,226 parameters, sgd, 1 rank(s), batch 64 per rank"
    assert lines[1].split() == ["strategy", *COLUMNS]
    assert lines[2].split()[:4] == ["ddp", "predicted", "67.29", "KiB"]
    assert [line.split()[0] for line in lines[2:]] == ["ddp", "zero1", "zero2", "fsdp"]
    bad = dtrain_cli("estimate-memory", configs / "digits_mlp.yaml", "--world-size", "0")
    assert bad.returncode == 2 and "--world-size: must be >= 1, got 0" in bad.stderr
    typo = dtrain_cli("estimate-memory", configs / "digits_mlp.yaml", "distributed.strategy=z3")
    assert typo.returncode == 2 and "distributed.strategy: 'z3' must be one of" in typo.stderr


@pytest.mark.parametrize("name, kwargs, per_element, per_param", [
    ("sgd", {}, 0, 0), ("sgd", {"momentum": 0.9}, 4, 0), ("adam", {}, 8, 4),
    ("adam", {"amsgrad": True}, 12, 4), ("adagrad", {}, 4, 4)])
def test_optimizer_state_bytes_come_from_one_step(tmp_path, name, kwargs, per_element,
                                                  per_param):
    config = tmp_path / "c.yaml"
    config.write_text(LM)
    cfg, _ = cfgmod.load_config(config, [f"optimizer.name={name}"] +
                                [f"+optimizer.{k}={v}" for k, v in kwargs.items()])
    params = [nn.Parameter(dt.zeros(5, 2)), nn.Parameter(dt.zeros(7))]
    frozen = nn.Parameter(dt.zeros(100), requires_grad=False)
    got = state_bytes(registry.lookup(registry.OPTIMIZERS, name), cfg, params + [frozen])
    assert got == [10 * per_element + per_param, 7 * per_element + per_param, 0]
