"""The `dtrain` command line (also `python -m dtrain.launcher`)."""
import argparse
import sys
from pathlib import Path

from dtrain.launcher import config as cfgmod

EXAMPLES = """examples:
  dtrain launch configs/digits_mlp.yaml                      train from a YAML config
  dtrain launch configs/digits_mlp.yaml trainer.epochs=5 distributed.nproc_per_node=2
  dtrain launch --nproc-per-node 2 train.py --lr 0.1         your own script on 2 ranks
  dtrain launch configs/digits_mlp.yaml --dry-run            print the mpiexec command
  dtrain config configs/digits_mlp.yaml data.batch_size=32   print the resolved config
  dtrain slurm configs/cifar10_resnet20.yaml --dry-run       print the sbatch script
  dtrain plot runs/digits_mlp                                loss/accuracy curves to PNG
"""


def _is_config(path):
    return str(path).endswith((".yaml", ".yml"))


def _launch_options():
    """The options of `launch`; also accepted after a config file, among its overrides."""
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--nproc-per-node", type=int, default=None,
                      help="ranks per node (default: the config's, or 1)")
    opts.add_argument("--nnodes", type=int, default=None, help="number of nodes")
    opts.add_argument("--hostfile", default=None, help="MPI hostfile (one host per line)")
    opts.add_argument("--max-restarts", type=int, default=None,
                      help="start a failed job again up to R times (resumes from checkpoints)")
    opts.add_argument("--rank0-only", action="store_true", default=None,
                      help="show only rank 0's standard output")
    opts.add_argument("--dry-run", action="store_true", default=None,
                      help="print the exact command and environment, then exit")
    return opts


def build_parser():
    from dtrain import __version__

    parser = argparse.ArgumentParser(
        prog="dtrain", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="dtrain: train deep-learning models on one GPU, many GPUs and many nodes.",
        epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"dtrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    launch = sub.add_parser(
        "launch", help="run a YAML experiment or a script on N ranks", parents=[_launch_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start the ranks of a job under mpiexec (srun inside a Slurm allocation). "
                    "TARGET is a YAML config (followed by key.path=value overrides) or a "
                    "Python script (followed by its own arguments).",
        epilog=EXAMPLES)
    launch.add_argument("target", help="CONFIG.yaml or SCRIPT.py")
    launch.add_argument("rest", nargs=argparse.REMAINDER,
                        help="config overrides (key.path=value) or the script's arguments")

    show = sub.add_parser("config", help="print the fully resolved config", epilog=EXAMPLES,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("config")
    show.add_argument("overrides", nargs="*")

    slurm = sub.add_parser("slurm", help="write an sbatch script from the config's slurm: block "
                                         "and submit it", epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    slurm.add_argument("config")
    slurm.add_argument("overrides", nargs="*")
    slurm.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")

    plot = sub.add_parser("plot", help="draw loss/accuracy curves of a run to PNG",
                          epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    plot.add_argument("run_dir")
    return parser


def _config_error(err):
    sys.stderr.write(f"dtrain: config error: {err}\n")
    return 2


def _load(path, overrides):
    """The validated config, registry names checked too (raises ConfigError)."""
    from dtrain.launcher.trainer import check_config

    cfg, where = cfgmod.load_config(path, overrides)
    check_config(cfg, where)
    return cfg


def cmd_launch(args):
    from dtrain.launcher import run

    if _is_config(args.target):
        late, overrides = _launch_options().parse_known_args(args.rest)
        for key, value in vars(late).items():
            if value is not None:
                setattr(args, key, value)
        try:
            cfg = _load(args.target, overrides)
        except cfgmod.ConfigError as err:
            return _config_error(err)
        dist = cfg["distributed"]
        out_dir = Path(cfg["experiment"]["output_dir"])
        spec = run.JobSpec(["trainer", str(out_dir / "config.yaml")],
                           nproc_per_node=args.nproc_per_node or dist["nproc_per_node"],
                           nnodes=args.nnodes or dist["nnodes"],
                           hostfile=args.hostfile or dist["hostfile"],
                           mpiexec=dist["mpiexec"], launcher=dist["launcher"],
                           rank0_only=args.rank0_only)
        if args.dry_run:
            print(run.dry_run_text(spec))
            return 0
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(cfgmod.dump(cfg))
    else:
        if not Path(args.target).is_file():
            sys.stderr.write(f"dtrain launch: no such script or config: {args.target}\n")
            return 2
        spec = run.JobSpec([args.target, *args.rest], nproc_per_node=args.nproc_per_node or 1,
                           nnodes=args.nnodes or 1, hostfile=args.hostfile,
                           rank0_only=args.rank0_only)
        if args.dry_run:
            print(run.dry_run_text(spec))
            return 0
    return run.launch(spec, max_restarts=args.max_restarts or 0)


def cmd_config(args):
    try:
        cfg = _load(args.config, args.overrides)
    except cfgmod.ConfigError as err:
        return _config_error(err)
    sys.stdout.write(cfgmod.dump(cfg))
    return 0


def cmd_slurm(args):
    from dtrain.launcher import slurm

    try:
        cfg = _load(args.config, args.overrides)
    except cfgmod.ConfigError as err:
        return _config_error(err)
    return slurm.submit(cfg, dry_run=args.dry_run)


def cmd_plot(args):
    from dtrain.launcher.metrics import plot

    return plot(args.run_dir)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    handlers = {"launch": cmd_launch, "config": cmd_config, "slurm": cmd_slurm,
                "plot": cmd_plot}
    if args.command is None:
        parser.print_help()
        return 0
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
