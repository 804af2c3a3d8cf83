"""The `dtrain` command line (also `python -m dtrain.launcher`)."""
import argparse
import contextlib
import dataclasses
import hashlib
import sys
from pathlib import Path

from dtrain.launcher import checks, elastic, rundir
from dtrain.launcher import config as cfgmod
from dtrain.launcher import export as export_cmd
from dtrain.launcher.exit_codes import MEANING, SIGNAL_MEANING, ExitCode

EXAMPLES = """examples:
  dtrain launch configs/digits_mlp.yaml                      train from a YAML config
  dtrain launch configs/digits_mlp.yaml trainer.epochs=5 distributed.nproc_per_node=2
  dtrain launch --nproc-per-node 2 train.py --lr 0.1         your own script on 2 ranks
  dtrain launch configs/digits_mlp.yaml --dry-run            print the mpiexec command
  dtrain launch --nnodes 1:2 --nproc-per-node 2 --max-restarts 3 configs/digits_mlp.yaml
                                                             go on on 1 node if one is lost
  dtrain config configs/digits_mlp.yaml data.batch_size=32   print the resolved config
  dtrain slurm configs/cifar10_resnet20.yaml --dry-run       print the sbatch script
  dtrain plot runs/digits_mlp                                curves of the newest run, PNG
  dtrain doctor                                              check this machine (--json)
  dtrain estimate-memory configs/digits_mlp.yaml --world-size 4   bytes per rank, per strategy
  dtrain export runs/digits_mlp --format onnx                the newest run's model as ONNX
"""


def _launch_epilog():
    """`dtrain launch --help`'s tail: the override grammar, run folders, the built-in names a
    config can use and the exit codes, read from where they are declared."""
    from dtrain.launcher import registry
    from dtrain.launcher.models import MODELS

    def names(table):
        return ", ".join(table)
    codes = "\n".join(f"  {int(c):<6}{MEANING[c]}" for c in ExitCode)
    return f"""{EXAMPLES}
overrides (Hydra's grammar; values are YAML):
  key.path=value      set a key              optimizer.lr=1e-3  model.args={{hidden: [64]}}
  +key.path=value     add a key the config lacks (error if it has it)
  ++key.path=value    add or set
  ~key.path           delete a key           optimizer.name=adam ~optimizer.momentum

runs: each launch writes to a new folder OUTPUT_DIR/version_N (OUTPUT_DIR/latest links the
newest); trainer.resume=auto|latest|PATH continues a run from its newest checkpoint, and is
refused (exit 2) when keys that change the result differ, unless
trainer.resume_allow_changes=true. SIGTERM/SIGHUP/SIGINT stop every rank (the trainer
checkpoints first) within --grace-period seconds.

built-in models: {names(MODELS)}
data sets: {names(registry.DATASETS)}
transforms: {names(registry.TRANSFORMS)}
optimizers: {names(registry.OPTIMIZERS)}
schedulers: {names(registry.SCHEDULERS)}

exit codes:
{codes}
  128+N {SIGNAL_MEANING}
"""


def _is_config(path):
    return str(path).endswith((".yaml", ".yml"))


def _launch_options():
    """The options of `launch`; also accepted after a config file, among its overrides."""
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--nproc-per-node", type=int, default=None,
                      help="ranks per node (default: the config's, or 1)")
    opts.add_argument("--nnodes", type=elastic.parse_nnodes, default=None, metavar="N|MIN:MAX",
                      help="number of nodes; MIN:MAX: elastic, with --max-restarts a failed "
                           "job restarts on the nodes left while >= MIN (without a hostfile "
                           "or Slurm, nodes are emulated on this machine)")
    opts.add_argument("--hostfile", default=None, help="MPI hostfile (one host per line)")
    opts.add_argument("--max-restarts", type=int, default=None,
                      help="start a failed job again up to R times (resumes from checkpoints)")
    opts.add_argument("--rank0-only", action="store_true", default=None,
                      help="show only rank 0's standard output")
    opts.add_argument("--grace-period", type=float, default=None, metavar="SECONDS",
                      help="on SIGTERM/SIGHUP/SIGINT, the ranks get this long to stop before "
                           "SIGKILL (default 10)")
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
        epilog=_launch_epilog())
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
    slurm.add_argument("--nnodes", type=elastic.parse_nnodes, default=None, metavar="N|MIN:MAX",
                       help="nodes to ask for (default: slurm.nodes); MIN:MAX: MAX nodes, and "
                            "the job goes on on >= MIN when nodes fail (with --max-restarts)")
    slurm.add_argument("--max-restarts", type=int, default=None,
                       help="dtrain launch's --max-restarts inside the job")

    plot = sub.add_parser("plot", help="draw loss/accuracy curves of a run to PNG",
                          epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    plot.add_argument("run_dir")

    doctor = sub.add_parser("doctor", help="check this machine (Python, BLAS, MPI, GPUs, "
                                           "network, the Slurm allocation) and say how to fix "
                                           "what is wrong; exit 1 when a check fails",
                            epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    doctor.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    doctor.add_argument("--mpiexec", default=None,
                        help="the mpiexec to check (default: the one dtrain launch uses)")

    memory = sub.add_parser(
        "estimate-memory", help="bytes per rank under each distributed.strategy: predicted, "
                                "and measured on real ranks with --measure",
        description="Per strategy (ddp, zero1, zero2, fsdp), the bytes one rank holds for "
                    "parameters, gradients, optimizer state and activations.")
    memory.add_argument("config")
    memory.add_argument("overrides", nargs="*")
    memory.add_argument("--world-size", type=int, default=None, metavar="N",
                        help="ranks (default: the config's nproc_per_node x nnodes)")
    memory.add_argument("--measure", action="store_true",
                        help="also run one step of each strategy on N real ranks")
    memory.add_argument("--json", action="store_true", help="print JSON instead of a table")
    export_cmd.register(sub)
    return parser


def _config_error(err):
    sys.stderr.write(f"dtrain: config error: {err}\n")
    return ExitCode.USAGE


def _load(path, overrides):
    """The validated config with its registry names checked, and key origins (raises
    ConfigError)."""
    cfg, where = cfgmod.load_config(path, overrides)
    checks.check_names(cfg, where)
    return cfg, where


def _cli_overrides(args):
    """Command-line options that set config keys, as overrides (so the resolved config that a
    run records is the one it ran with)."""
    pairs = (("nproc_per_node", "distributed.nproc_per_node"), ("nnodes", "distributed.nnodes"),
             ("hostfile", "distributed.hostfile"))
    values = {**vars(args), "nnodes": args.nnodes and args.nnodes[1]}  # MIN:MAX runs MAX
    return [f"{key}={values[opt]}" for opt, key in pairs if values[opt] is not None]


def _check_counts(args):
    """The launch options' values (argparse checks only their types)."""
    limits = (("nproc_per_node", 1, ">= 1"), ("grace_period", 0, ">= 0 seconds"))
    for opt, low, what in limits:
        value = getattr(args, opt)
        if value is not None and not value >= low:  # NaN too
            sys.stderr.write(f"dtrain launch: --{opt.replace('_', '-')}: must be {what}, got "
                             f"{value}\n")
            return False
    return True


def _launch_config(args):
    from dtrain.launcher import run

    late, overrides = _launch_options().parse_known_args(args.rest)
    for key, value in vars(late).items():
        if value is not None:
            setattr(args, key, value)
    if not _check_counts(args):
        return ExitCode.USAGE
    try:
        cfg, where = _load(args.target, [*overrides, *_cli_overrides(args)])
        cfg = dataclasses.replace(cfg, experiment=dataclasses.replace(
            cfg.experiment, output_dir=str(Path(cfg.experiment.output_dir).resolve())))
        if args.dry_run:
            checks.check_output_dir(cfg, where)
            return _dry_run(cfg, args)
        checks.check_launch(cfg, where)
        plan = rundir.plan(cfg)
        resume = str(plan.resume_from) if plan.resume_from else None
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, resume=resume))
        try:
            rundir.check_resume(plan, cfg.to_dict())
        except cfgmod.ConfigError:
            if not plan.continuing:
                with contextlib.suppress(OSError):  # the new folder of a run that never was
                    plan.run_dir.rmdir()
            raise
    except cfgmod.ConfigError as err:
        return _config_error(err)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    (plan.run_dir / "config.yaml").write_text(cfgmod.dump(cfg))
    rundir.link_latest(plan.run_dir)
    print(f"dtrain launch: run directory {plan.run_dir} ("
          f"{'continuing it' if plan.continuing else 'a new run'})", flush=True)
    spec = _spec(cfg, args, plan.run_dir / "config.yaml", plan.run_id)
    return run.launch(dataclasses.replace(spec, run_dir=str(plan.run_dir)),
                      max_restarts=args.max_restarts or 0)


def _min_nnodes(args):
    """MIN of `--nnodes MIN:MAX` (None: a fixed number of nodes)."""
    return args.nnodes[0] if args.nnodes else None


def _spec(cfg, args, config_path, run_id):
    from dtrain.launcher import run

    dist = cfg.distributed
    return run.JobSpec(["trainer", str(config_path)], nproc_per_node=dist.nproc_per_node,
                       nnodes=dist.nnodes, hostfile=dist.hostfile, mpiexec=dist.mpiexec,
                       launcher=dist.launcher, rank0_only=args.rank0_only,
                       grace_period=args.grace_period, min_nnodes=_min_nnodes(args),
                       env={rundir.RUN_ID_ENV: run_id} if run_id else {})


def _dry_run(cfg, args):
    """Print the command that runs exactly this resolved config: it is written, content-
    addressed, next to the runs (so the printed command can never refer to a stale one)."""
    from dtrain.launcher import run

    text = cfgmod.dump(cfg)
    out = Path(cfg.experiment.output_dir)
    path = out / f"resolved-{hashlib.sha256(text.encode()).hexdigest()[:10]}.yaml"
    path.write_text(text)
    print(f"# the resolved config: {path}\n"
          f"# each run writes to {out}/$DTRAIN_RUN_ID (the same id continues that run)\n"
          f'export {rundir.RUN_ID_ENV}="${{{rundir.RUN_ID_ENV}:-run-$(date +%Y%m%d-%H%M%S)}}"')
    print(run.dry_run_text(_spec(cfg, args, path, None)))
    return ExitCode.OK


def cmd_launch(args):
    from dtrain.launcher import run

    if _is_config(args.target):
        return _launch_config(args)
    if not _check_counts(args):
        return ExitCode.USAGE
    if not Path(args.target).is_file():
        sys.stderr.write(f"dtrain launch: no such script or config: {args.target}\n")
        return ExitCode.USAGE
    spec = run.JobSpec([args.target, *args.rest], nproc_per_node=args.nproc_per_node or 1,
                       nnodes=args.nnodes[1] if args.nnodes else 1, hostfile=args.hostfile,
                       rank0_only=args.rank0_only, grace_period=args.grace_period,
                       min_nnodes=_min_nnodes(args))
    if args.dry_run:
        print(run.dry_run_text(spec))
        return ExitCode.OK
    return run.launch(spec, max_restarts=args.max_restarts or 0)


def cmd_config(args):
    try:
        cfg, _ = _load(args.config, args.overrides)
    except cfgmod.ConfigError as err:
        return _config_error(err)
    sys.stdout.write(cfgmod.dump(cfg))
    return ExitCode.OK


def cmd_slurm(args):
    from dtrain.launcher import slurm

    try:
        cfg, where = _load(args.config, args.overrides)
        if not args.dry_run:
            checks.check_paths(cfg, where)
    except cfgmod.ConfigError as err:
        return _config_error(err)
    return slurm.submit(cfg.to_dict(), dry_run=args.dry_run, nnodes=args.nnodes,
                        max_restarts=args.max_restarts)


def cmd_plot(args):
    from dtrain.launcher.metrics import plot

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").exists() and (run_dir / "latest").is_dir():
        run_dir = run_dir / "latest"  # an experiment's folder: its newest run
    return plot(run_dir)


def cmd_doctor(args):
    from dtrain.launcher import doctor

    return doctor.main(as_json=args.json, mpiexec=args.mpiexec)


def cmd_estimate_memory(args):
    from dtrain.launcher import memory

    if args.world_size is not None and args.world_size < 1:
        sys.stderr.write(f"dtrain estimate-memory: --world-size: must be >= 1, got "
                         f"{args.world_size}\n")
        return ExitCode.USAGE
    try:
        cfg, _ = _load(args.config, args.overrides)
    except cfgmod.ConfigError as err:
        return _config_error(err)
    return memory.main(cfg, args.world_size, args.measure, args.json)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    handlers = {"launch": cmd_launch, "config": cmd_config, "slurm": cmd_slurm,
                "plot": cmd_plot, "doctor": cmd_doctor, "estimate-memory": cmd_estimate_memory,
                "export": export_cmd.main}
    if args.command is None:
        parser.print_help()
        return 0
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
