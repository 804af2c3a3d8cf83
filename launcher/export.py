"""`dtrain export RUN_DIR --format onnx [--output PATH]`: a trained run's model as ONNX.

The model is rebuilt as its run built it: from the run's config.yaml, with the input shape
and classes of the config's data set, and it takes the weights of the newest checkpoint in
the run's checkpoints.json. Two test samples are the example input; the batch axis (named
`batch`) is dynamic.
"""
import sys
from pathlib import Path

import dtrain as dt
from dtrain.launcher import config as cfgmod
from dtrain.launcher.exit_codes import ExitCode
from dtrain.launcher.rundir import Checkpoints, load_full

FORMATS = ("onnx",)


def register(sub):
    """Add the `export` subcommand to the CLI's subparsers."""
    p = sub.add_parser("export", help="write a trained run's model for serving (ONNX)",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", help="a run folder, or an experiment folder (its latest run)")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--output", default=None, help="file to write (default RUN_DIR/model.onnx)")


def main(args):
    from dtrain.launcher import registry  # data sets and models: only for this command
    from dtrain.launcher.models import build_model

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists() and (run_dir / "latest" / "config.yaml").exists():
        run_dir = run_dir / "latest"
    if not (run_dir / "config.yaml").exists():
        return _usage(f"{run_dir} is not a run folder (no config.yaml); give one that "
                      f"`dtrain launch` made, e.g. runs/digits_mlp/version_0")
    path = Checkpoints(run_dir).newest()
    if path is None:
        return _usage(f"{run_dir} has no complete checkpoint (checkpoints.json lists none); "
                      f"train it with trainer.checkpoint_every set")
    try:
        state = load_full(path, ["model"])
    except (OSError, RuntimeError) as err:
        return _usage(f"cannot read {path}: {err}")
    cfg, _ = cfgmod.load_config(run_dir / "config.yaml")
    _, test_ds, in_shape, num_classes, _ = registry.build_datasets(cfg.data, cfg.experiment.seed)
    model = build_model(cfg.model, in_shape, num_classes)
    model.load_state_dict(state["model"])
    example = dt.stack([dt.as_tensor(test_ds[i][0]) for i in range(2)])
    output = Path(args.output or run_dir / "model.onnx")
    dt.onnx.export(model, (example,), output, input_names=["input"], output_names=["output"],
                   dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    print(f"wrote {output} ({args.format}; weights of {path}, step {state['step']})")
    return ExitCode.OK


def _usage(message):
    sys.stderr.write(f"dtrain export: {message}\n")
    return ExitCode.USAGE
