"""Privacy overhead: seconds per round of plain FedAvg, + central DP, + secure aggregation, + both,
and secure aggregation at 1,000 registered / 100 sampled hospitals, side by side in one run.

Setting: round_throughput.py's (100 hospitals x 200 samples, 1 epoch, batch 32, FedAvg, 2 Ray
workers), with the GroupNorm small CNN in every variant (central DP refuses BatchNorm statistics),
so the variants differ only in the privacy machinery. Secure aggregation: SecAgg+ with 10
neighbours, threshold 6, no dropouts.

    python experiments/bench/privacy_overhead.py [--rounds 4]

Prints the steady seconds per round of each variant and its ratio to plain FedAvg (target:
secure aggregation + central DP <= 1.15x plain at 100 hospitals).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from fedsim.config import load_config
from fedsim.simulation import Simulation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round_throughput import HOSPITALS, TEST_PER_HOSPITAL, TRAIN_PER_HOSPITAL, bench_overrides  # noqa: E402  (the shared setting)

CENTRAL_DP = "privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0}"
SECURE = "secure_aggregation={threshold: 6, neighbours: 10, dropout: 0.0}"
REGISTERED = 1000


def variants() -> dict[str, list[str]]:
    large = [
        "data.source={kind: synthetic, classes: 2, "
        f"train_samples: {REGISTERED * (TRAIN_PER_HOSPITAL + TEST_PER_HOSPITAL)}, test_samples: 1000}}",
        f"data.hospitals={REGISTERED}",
        f"sampling.clients_per_round={HOSPITALS}",
        "eval.hospitals=sampled",
    ]
    return {
        "plain FedAvg": [],
        "+ central DP": [CENTRAL_DP],
        "+ secure aggregation": [SECURE],
        "+ secure aggregation + central DP": [SECURE, CENTRAL_DP],
        f"secure aggregation, {REGISTERED} registered / {HOSPITALS} sampled": [SECURE, *large],
    }


def seconds_per_round(overrides: list[str]) -> tuple[float, list[float]]:
    config = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as out:
        times = [s.seconds for s in Simulation(config, f"{out}/run", quiet=True).run()]
    steady = times[1:-1] or times[1:] or times  # the first round warms up, the last also evaluates globally
    return statistics.median(steady), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base = bench_overrides(args.rounds, args.workers) + ["model.name=small_cnn_gn"]
    results = {name: seconds_per_round(base + extra) for name, extra in variants().items()}
    plain = results["plain FedAvg"][0]
    print(f"setting: {HOSPITALS} hospitals x {TRAIN_PER_HOSPITAL} samples, small CNN (GroupNorm), 1 epoch, batch 32, "
          f"FedAvg, {args.workers} workers")
    for name, (steady, times) in results.items():
        listed = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name:<55} {steady:6.2f} s per round  {steady / plain:5.2f}x plain  ({listed})")
    print("target: secure aggregation + central DP <= 1.15x plain at 100 hospitals")


if __name__ == "__main__":
    main()
