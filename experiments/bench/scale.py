"""Scale: seconds per round and memory against the number of registered hospitals.

Setting (the scale-out issue's): hospitals of 50 synthetic 1x28x28 samples each (4 classes, IID
split, 20% kept as each hospital's own test split), the small CNN, 1 local epoch, FedAvg, 2
single-core workers on a local Ray cluster. Each round trains `sampled` hospitals and scores only
those (`eval.hospitals: sampled`); the global test set is scored only after the last round
(`eval.every`), so steady rounds are pure training. Every configuration runs in a fresh process
with its own Ray, as `fedsim run` would, so memory and start-up figures are its own.

    python experiments/bench/scale.py [--rounds 5] [--samples 50] [--first-round-samples 10]

Prints
1. for 100 / 300 / 1,000 registered hospitals with 100 sampled per round, and 1,000 with 50:
   median steady seconds per round (should follow the number sampled, not registered), total
   peak RSS of the driver and the workers (target <= 4 GB; shared object-store pages count once
   per process, so this is an upper bound) and peak object-store use;
2. 10,000 registered hospitals (of `--first-round-samples` each: generating 50 synthetic images
   for each of 10,000 hospitals alone takes ~45 s and ~9 GB on one core): seconds from the config
   to the start of the first round (target <= 30 s), split into building the data and starting Ray
   and the worker pool.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

GB = 1024**3
ROUND_GRID = [(100, 100), (300, 100), (1000, 100), (1000, 50)]  # (registered, sampled per round)
FIRST_ROUND_REGISTERED = 10_000


def bench_config(registered: int, sampled: int, rounds: int, samples: int):
    from fedsim.config import load_config

    return load_config(
        None,
        [
            f"rounds={rounds}",
            f"data.source={{kind: synthetic, classes: 4, train_samples: {registered * samples}, test_samples: 1000}}",
            f"data.hospitals={registered}",
            "data.partition={scheme: iid}",
            "train.epochs=1",
            f"sampling.clients_per_round={sampled}",
            "eval.hospitals=sampled",
            f"eval.every={rounds}",
            "engine.workers=2",
        ],
    )


def measure(registered: int, sampled: int, rounds: int, samples: int) -> dict[str, float]:
    """One configuration, run in the calling (fresh) process."""
    from fedsim.results import RESOURCES, RunDirectory
    from fedsim.simulation import Simulation

    config = bench_config(registered, sampled, rounds, samples)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        simulation = Simulation(config, f"{folder}/run", quiet=True)
        data_seconds = time.perf_counter() - started
        summaries = simulation.run()
        resources = RunDirectory(f"{folder}/run").read(RESOURCES).to_pylist()
    seconds = [summary.seconds for summary in summaries]
    steady = seconds[1:-1] or seconds  # not the first (warm-up) nor the last (global evaluation)
    return {
        "data_seconds": data_seconds,
        "startup_seconds": simulation.startup_seconds,
        "first_round_seconds": seconds[0],
        "steady_seconds": statistics.median(steady),
        "driver_bytes": max(row["driver_peak_rss"] for row in resources),
        "workers_bytes": max(row["workers_peak_rss"] for row in resources),
        "rss_bytes": max(row["driver_peak_rss"] + row["workers_peak_rss"] for row in resources),
        "store_bytes": max(row["object_store_bytes"] for row in resources),
    }


def in_fresh_process(*args: int) -> dict[str, float]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as executor:
        return executor.submit(measure, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=50, help="samples per hospital")
    parser.add_argument("--first-round-samples", type=int, default=10, help="samples per hospital of the 10,000")
    args = parser.parse_args()

    print(f"setting: {args.samples} samples per hospital, small CNN, 1 epoch, FedAvg, 2 workers x 1 CPU, "
          f"{args.rounds} rounds, sampled hospitals scored, global test after the last round")
    print("registered  sampled  s/round (steady)  peak RSS: driver + workers = total (target <= 4 GB)  object store")
    for registered, sampled in ROUND_GRID:
        figures = in_fresh_process(registered, sampled, args.rounds, args.samples)
        print(f"{registered:>10}  {sampled:>7}  {figures['steady_seconds']:>16.2f}  "
              f"{figures['driver_bytes'] / GB:>15.2f} + {figures['workers_bytes'] / GB:.2f} = "
              f"{figures['rss_bytes'] / GB:.2f} GB {'':>22}{figures['store_bytes'] / GB:.2f} GB", flush=True)

    figures = in_fresh_process(FIRST_ROUND_REGISTERED, 100, 1, args.first_round_samples)
    to_first_round = figures["data_seconds"] + figures["startup_seconds"]
    print(f"{FIRST_ROUND_REGISTERED} registered x {args.first_round_samples} samples: first round starts after "
          f"{to_first_round:.1f} s (target <= 30 s) = "
          f"{figures['data_seconds']:.1f} s building the data + {figures['startup_seconds']:.1f} s starting Ray and "
          f"the pool; the first round (100 sampled, incl. worker warm-up) took {figures['first_round_seconds']:.1f} s; "
          f"peak RSS {figures['rss_bytes'] / GB:.2f} GB")


if __name__ == "__main__":
    main()
