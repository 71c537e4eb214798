"""What one round's evaluation costs on a config (default: the embedded defaults, 20 hospitals):
every hospital scored on its own test split, then the global model's test and validation
metrics (and the task's per-round evaluation tables, where it has them), in-process on one core.

    python experiments/bench/eval_cost.py [--repeats 10] [--set KEY=VALUE ...]

Prints the median seconds of each part over the repeats. Run it on the code before and after a
change to the metrics, side by side, on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedsim.config import load_config
from fedsim.engine.in_process import InProcessBackend
from fedsim.pipeline.base import build_pipeline
from fedsim.strategies import build_strategy
from fedsim.tasks.factory import build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = load_config(None, ["engine.backend=in_process", "engine.workers=1", *args.overrides])
    task = build_task(config)
    strategy = build_strategy(config, task)
    backend = InProcessBackend(task, strategy, build_pipeline(config, task), task.initial_params(config.seed), config.seed)
    torch.set_num_threads(1)
    hospitals, units = list(range(task.num_hospitals)), task.global_eval_units()
    timings: dict[str, list[float]] = {"evaluate (forward passes + hospital metrics)": [], "global metrics": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        _, outputs = backend.evaluate(hospitals, units)
        evaluated = time.perf_counter()
        task.global_metrics(outputs)
        if hasattr(task, "global_tables"):
            task.global_tables(outputs)
        timings["evaluate (forward passes + hospital metrics)"].append(evaluated - started)
        timings["global metrics"].append(time.perf_counter() - evaluated)
    for part, seconds in timings.items():
        print(f"{part}: median {statistics.median(seconds) * 1e3:.1f} ms over {args.repeats} repeats")


if __name__ == "__main__":
    main()
