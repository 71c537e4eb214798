"""Scale: seconds per round and memory against the number of registered hospitals.

Setting (the scale-out issue's): hospitals of 50 synthetic 1x28x28 samples each (4 classes, IID
split, 20% kept as each hospital's own test split), the small CNN, 1 local epoch, FedAvg, 2
single-core workers on a local Ray cluster. Each round trains `sampled` hospitals and scores only
those (`eval.hospitals: sampled`); the global test set is scored only after the last round
(`eval.every`), so steady rounds are pure training. Every configuration runs in a fresh process
with its own Ray, as `fedsim run` would, so memory and start-up figures are its own.

    python experiments/bench/scale.py [--rounds 5] [--samples 50] [--registered 1000 10000 100000]

Prints, for 1,000 / 10,000 / 100,000 registered hospitals with 100 sampled per round: seconds
from the config to the start of the first round (building the data + starting Ray and the pool;
target <= 15 s at 10,000), the first round against a steady round (target <= 1.5x), median steady
seconds per round (should follow the number sampled, not registered), peak RSS of the driver
(target < 2 GB at 10,000) and of the workers (total target < 4 GB at 100,000; shared object-store
pages count once per process, so the sum is an upper bound), and peak object-store use.
Synthetic hospitals' images are generated on the worker that trains them (fedsim.data.federation
Generated), so the driver holds only labels and index arrays.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

GB = 1024**3
REGISTERED = (1_000, 10_000, 100_000)
SAMPLED = 100


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
    parser.add_argument("--registered", type=int, nargs="+", default=list(REGISTERED), help="registered hospitals, one run each")
    args = parser.parse_args()

    print(f"setting: {args.samples} samples per hospital, {SAMPLED} sampled per round, small CNN, 1 epoch, FedAvg, "
          f"2 workers x 1 CPU, {args.rounds} rounds, sampled hospitals scored, global test after the last round")
    print("registered  to 1st round (data + Ray/pool)  1st/steady  s/round  peak RSS driver + workers = total  object store")
    for registered in args.registered:
        f = in_fresh_process(registered, SAMPLED, args.rounds, args.samples)
        to_first = f["data_seconds"] + f["startup_seconds"]
        first_ratio = (f["startup_seconds"] + f["first_round_seconds"]) / f["steady_seconds"]
        print(f"{registered:>10}  {to_first:>8.1f} s ({f['data_seconds']:.1f} + {f['startup_seconds']:.1f})"
              f"  {first_ratio:>13.2f}x  {f['steady_seconds']:>7.2f}  "
              f"{f['driver_bytes'] / GB:>8.2f} + {f['workers_bytes'] / GB:.2f} = {f['rss_bytes'] / GB:.2f} GB"
              f"  {f['store_bytes'] / GB:>10.3f} GB", flush=True)


if __name__ == "__main__":
    main()
