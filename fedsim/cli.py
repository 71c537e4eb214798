"""The `fedsim` command: run a configured simulation, report on a run directory, plot a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.errors import ConfigError, FedsimError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description="Federated learning across simulated hospitals, on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a simulation and write a run directory")
    run.add_argument("config", nargs="?", help="YAML config (omit for the embedded quickstart defaults)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. --set data.hospitals=50 (repeatable)")
    run.add_argument("--out", help="run directory to create (default runs/<config>-<time>)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    report = commands.add_parser("report", help="print the results table of a run directory")
    report.add_argument("run_dir")
    plot = commands.add_parser("plot", help="save a sweep's plots as PNG (see experiments/sweep.py)")
    plot.add_argument("sweep_dir")
    plot.add_argument("--out", help="folder for the PNG files (default SWEEP_DIR/plots)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from fedsim.api import run
    from fedsim.config import load_config
    from fedsim.report import render_report
    from fedsim.results import fresh_run_dir

    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else fresh_run_dir(Path(args.config).stem if args.config else "default")
    run(config, out, quiet=args.quiet)
    if not args.quiet:
        print(render_report(out))
    else:
        print(out)
    return 0


def _report(args: argparse.Namespace) -> int:
    from fedsim.report import render_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (expected config.yaml inside)")
    damaged: list[Path] = []
    print(render_report(run_dir, damaged))
    if damaged:
        print(f"fedsim: error: {damaged[0]}: damaged Parquet part skipped ({len(damaged)} in all); the rest is reported above", file=sys.stderr)
        return 2
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fedsim.plot import save_plots

    for path in save_plots(args.sweep_dir, args.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"run": _run, "report": _report, "plot": _plot}[args.command](args)
    except FedsimError as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
