"""FedMRL's server-side cost: the share of round time spent in QMIX (acting + learning) and the SOM.

Same setting as round_throughput.py (100 hospitals x 200 samples, small CNN, 1 epoch, batch 32,
every hospital every round), FedMRL with all three parts on. Target: QMIX + SOM <= 10% of a round.

    python experiments/bench/fedmrl_overhead.py [--rounds 5]

Also prints FedAvg's steady round in the same run, for the whole-method cost (FedMRL also sketches
each update on the workers and waits for the server's weights before the workers sum, and mu > 0
adds the proximal term to local training).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round_throughput import bench_overrides  # noqa: E402  (the shared benchmark setting)

from fedsim.config import load_config  # noqa: E402
from fedsim.engine.cluster import ray_session  # noqa: E402
from fedsim.simulation import Simulation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setting = [*bench_overrides(args.rounds, workers=2), "eval.every=1"]  # FedMRL learns from every round
    configs = {"fedavg": load_config(None, setting), "fedmrl": load_config(None, [*setting, "strategy=fedmrl"])}
    rows = {}
    with ray_session(configs["fedavg"].engine, 2), tempfile.TemporaryDirectory() as out:
        for label, config in configs.items():
            Simulation(config, Path(out) / label, quiet=True).run()
            rows[label] = pq.read_table(Path(out) / label / "rounds.parquet").to_pylist()[1:]  # steady rounds
    seconds = {label: statistics.median(r["seconds"] for r in table) for label, table in rows.items()}
    overhead = statistics.median(r["strategy_qmix_som_seconds"] for r in rows["fedmrl"])
    print("setting: 100 hospitals x 200 samples, small CNN, 1 epoch, batch 32, all hospitals, evaluation every round")
    print(f"steady round: fedavg {seconds['fedavg']:.2f} s, fedmrl {seconds['fedmrl']:.2f} s")
    print(f"QMIX + SOM on the server: {overhead:.3f} s per round = "
          f"{overhead / seconds['fedmrl']:.1%} of a FedMRL round (target <= 10%)")


if __name__ == "__main__":
    main()
