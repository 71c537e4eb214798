"""Compare strategies (or any labelled variants) x seeds on one config; print final metrics as mean ± std.

    python experiments/compare.py experiments/configs/pneumonia_dirichlet.yaml \
        --strategies fedavg "{name: fedprox, mu: 0.01}" fednova fedbn scaffold --seeds 0 1 2 \
        --out runs/compare-pneumonia

    python experiments/compare.py experiments/configs/scheduling.yaml \
        --variants experiments/variants/scheduling_baselines.yaml --seeds 0 1 2 --out runs/compare-scheduling

A variants file maps labels to settings applied on top of the config (e.g. `fifo: {scheduling:
{policy: fifo}}`). The table's columns come from the task (its TaskSpec's compare_columns, fedsim.tasks.specs).
Every run's directory lands under --out/<label as a folder name, e.g. fedprox-mu-0.01>/seed-<k>/ (finished ones are reused when the
command is repeated) and the rows behind the table are combined into --out/comparison.parquet.
`--target global_balanced_accuracy=0.8` adds a table of the rounds and simulated hours each
variant took to reach it (README, Systems).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.comparison import load_variants, plan_variants, run_all, run_directory, strategy_variant, summary_table
from fedsim.errors import FedsimError
from fedsim.target import parse_target, target_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare federated strategies or other variants over seeds on one config.")
    parser.add_argument("config", nargs="?", help="YAML config (omit for the embedded defaults)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--strategies", nargs="+", default=["fedavg", "fedprox", "fednova", "fedbn", "scaffold"])
    chosen.add_argument("--variants", metavar="FILE", help="YAML mapping of label -> settings (instead of --strategies)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--target", metavar="METRIC=VALUE", help="also tabulate rounds and simulated hours to reach it")
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.target) if args.target else None
        variants = load_variants(args.variants) if args.variants else [strategy_variant(t) for t in args.strategies]
        runs = plan_variants(args.config, args.overrides, variants, args.seeds)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = run_all(runs, out, quiet=False)
    except FedsimError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    print(summary_table(rows, runs[0][2].task))
    if target is not None:
        print("\n" + target_table(((label, seed, run_directory(out, label, seed)) for label, seed, _ in runs), target))
    print(f"\nthe rows behind the table, all runs: {out / 'comparison.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
