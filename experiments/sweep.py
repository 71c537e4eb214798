"""Run a sweep file on Ray Tune (logic in fedsim.sweep).

    python experiments/sweep.py experiments/sweeps/heterogeneity.yaml --out sweeps/het [--set rounds=5]

Runs on a local Ray cluster, or on the cluster named by RAY_ADDRESS (as under `ray job submit`).
Running it again with the same --out skips finished trials and reruns interrupted ones. Plot with
`fedsim plot SWEEP_DIR`.
"""

from __future__ import annotations

import argparse
import sys

from fedsim.errors import FedsimError
from fedsim.sweep import load_sweep, run_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="sweep YAML (base config, overrides, grid)")
    parser.add_argument("--out", required=True, help="sweep directory (created, or resumed when it exists)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of every trial, after the sweep file's own `set` (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    args = parser.parse_args(argv)
    try:
        spec = load_sweep(args.spec)
        spec = spec.model_copy(update={"set": spec.set + args.overrides})
        outcome = run_sweep(spec, args.out, verbose=0 if args.quiet else 1)
    except FedsimError as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(outcome.ran)} trials ran, {len(outcome.skipped)} were already finished, {len(outcome.failed)} failed")
    for label, error in outcome.failed.items():
        print(f"failed {label}: {error}", file=sys.stderr)
    print(f"results: {args.out}/results  (plot: fedsim plot {args.out})")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
