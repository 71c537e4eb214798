"""The `fedsim` command: run a configured simulation, report on a run directory, plot a run, a
comparison or a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.errors import ConfigError, FedsimError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description="Federated learning across simulated hospitals, on Ray.")
    parser.add_argument("--version", action="version", version=f"fedsim {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a simulation and write a run directory")
    run.add_argument("config", nargs="?", help="YAML config (omit for the embedded quickstart defaults)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. --set data.hospitals=50 (repeatable)")
    run.add_argument("--out", help="run directory to create (default runs/<config>-<time>)")
    run.add_argument("--quiet", action="store_true", help="print only the run directory (no progress bar, no table)")
    report = commands.add_parser("report", help="print the results table of a run directory")
    report.add_argument("run_dir")
    report.add_argument("--all", dest="show_all", action="store_true", help="every round, however many")
    report.add_argument("--target", dest="targets", action="append", default=[], metavar="METRIC=VALUE",
                        help="rounds and simulated time until METRIC >= VALUE (METRIC<=VALUE: at most), e.g. "
                             "global_balanced_accuracy=0.8; repeatable")
    plot = commands.add_parser(
        "plot", help="save the plots of a run directory, a compare.py output or a sweep as PNG"
    )
    plot.add_argument("folder", help="RUN_DIR, COMPARE_DIR (experiments/compare.py --out) or SWEEP_DIR")
    plot.add_argument("--out", help="folder for the PNG files (default FOLDER/plots)")
    return parser


def _version() -> str:
    from fedsim import __version__

    return __version__


def _run(args: argparse.Namespace) -> int:
    from fedsim.api import resume, run
    from fedsim.config import load_config
    from fedsim.report import render_report
    from fedsim.results import fresh_run_dir

    if args.resume:
        if args.config or args.overrides or args.out:
            raise ConfigError("--resume: continues a run with its own config.yaml; give no config, --set or --out")
        out = Path(args.resume)
        args.run_dir = out
        resume(out, quiet=args.quiet)
    else:
        config = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else fresh_run_dir(Path(args.config).stem if args.config else "default")
        args.run_dir = out
        run(config, out, quiet=args.quiet)
    if not args.quiet:
        print(render_report(out))
    else:
        print(out)
    return 0


def _report(args: argparse.Namespace) -> int:
    from fedsim.report import render_report
    from fedsim.target import parse_target

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (expected config.yaml inside)")
    damaged: list[Path] = []
    targets = [parse_target(text) for text in args.targets]
    print(render_report(run_dir, show_all=args.show_all, damaged=damaged, targets=targets))
    if damaged:
        print(f"fedsim: error: {damaged[0]}: damaged Parquet part skipped ({len(damaged)} in all); the rest is reported above", file=sys.stderr)
        return 2
    return 0


def _plot(args: argparse.Namespace) -> int:
    from fedsim.plots import save_plots

    for path in save_plots(args.folder, args.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"run": _run, "report": _report, "plot": _plot}[args.command](args)
    except FedsimError as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(getattr(args, "run_dir", None)), file=sys.stderr)
        return 130


def _interrupted(run_dir: Path | None) -> str:
    """One line saying how far an interrupted run got and how to continue it."""
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return "fedsim: interrupted"
    from fedsim.results import ROUNDS, RunDirectory

    run = RunDirectory(run_dir)
    finished = len(list(run.table_path(ROUNDS).glob("part-*.parquet")))
    return f"fedsim: interrupted after round {finished} of {run.config().rounds}; resume with `fedsim run --resume {run_dir}`"


if __name__ == "__main__":
    sys.exit(main())
