"""`dtrain` console script. Verbs arrive with the launcher; `--version` and `--help` now."""
import argparse
import sys


def build_parser():
    from dtrain import __version__

    parser = argparse.ArgumentParser(
        prog="dtrain",
        description="dtrain: train deep-learning models on one GPU, many GPUs and many nodes.",
        epilog="example: dtrain --version")
    parser.add_argument("--version", action="version", version=f"dtrain {__version__}")
    return parser


def main(argv=None):
    parser = build_parser()
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
