"""Compare strategies (or any labelled variants) x seeds on one config; print each metric's final
round and last-5-round mean as mean ± std over seeds, and rounds to a target.

    python experiments/compare.py experiments/configs/pneumonia_dirichlet.yaml \
        --strategies fedavg "{name: fedprox, mu: 0.01}" fednova fedbn scaffold centralised local_only \
        --seeds 0 1 2 --target global_balanced_accuracy=0.8 --out runs/compare-pneumonia

    python experiments/compare.py experiments/configs/scheduling.yaml \
        --variants experiments/variants/scheduling_baselines.yaml --seeds 0 1 2 --out runs/compare-scheduling

A variants file maps labels to settings applied on top of the config (e.g. `fifo: {scheduling:
{policy: fifo}}`). The table's columns come from the task (its TaskSpec's compare_columns, fedsim.tasks.specs).
`--target METRIC=LEVEL` (or METRIC>=LEVEL, METRIC<=LEVEL for a loss; repeatable) adds a table of
the rounds each variant needs to reach it, and the simulated hours where the runs simulate time.
A single seed shows "± –" (no spread to estimate). Every run's directory lands under --out/<label as a folder name, e.g. fedprox-mu-0.01>/seed-<k>/ (finished ones are reused when the
command is repeated) and the rows behind the table are combined into --out/comparison.parquet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.comparison import load_variants, plan_variants, run_all, strategy_variant, summary_table, targets_table
from fedsim.errors import FedsimError
from fedsim.target import parse_target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare federated strategies or other variants over seeds on one config.")
    parser.add_argument("config", nargs="?", help="YAML config (omit for the embedded defaults)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--strategies", nargs="+", default=["fedavg", "fedprox", "fednova", "fedbn", "scaffold"])
    chosen.add_argument("--variants", metavar="FILE", help="YAML mapping of label -> settings (instead of --strategies)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--target", dest="targets", action="append", default=[], metavar="METRIC=LEVEL",
                        help="also tabulate rounds to reach it, e.g. global_balanced_accuracy=0.8 (repeatable)")
    args = parser.parse_args(argv)
    try:
        targets = [parse_target(text) for text in args.targets]
        variants = load_variants(args.variants) if args.variants else [strategy_variant(t) for t in args.strategies]
        runs = plan_variants(args.config, args.overrides, variants, args.seeds)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = run_all(runs, out, quiet=False)
        print(summary_table(rows, runs[0][2].task))
        if targets:
            print("\n" + targets_table(rows, targets))
    except FedsimError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    print(f"\nthe rows behind the table, all runs: {out / 'comparison.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
