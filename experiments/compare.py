"""Compare strategies x seeds on one config and print final metrics as mean ± std.

    python experiments/compare.py experiments/configs/pneumonia_dirichlet.yaml \
        --strategies fedavg "{name: fedprox, mu: 0.01}" fednova fedbn scaffold --seeds 0 1 2 \
        --out runs/compare-pneumonia

Every run's directory lands under --out/<strategy>/seed-<k>/ (finished ones are reused when the
command is repeated) and all rounds of all runs are combined into --out/comparison.parquet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.comparison import plan_runs, run_all, summary_table
from fedsim.config import ConfigError
from fedsim.data.errors import DataError
from fedsim.engine.cluster import ClusterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare federated strategies over seeds on one config.")
    parser.add_argument("config", nargs="?", help="YAML config (omit for the embedded defaults)")
    parser.add_argument("--strategies", nargs="+", default=["fedavg", "fedprox", "fednova", "fedbn", "scaffold"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/compare")
    args = parser.parse_args(argv)
    try:
        runs = plan_runs(args.config, args.overrides, args.strategies, args.seeds)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rounds = run_all(runs, out, quiet=False)
    except (ConfigError, DataError, ClusterError) as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    print(summary_table(rounds))
    print(f"\nall rounds of all runs: {out / 'comparison.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
