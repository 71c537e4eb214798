"""Round throughput: fedsim against a plain single-process PyTorch loop doing identical work.

Setting (the foundation issue's): 100 hospitals x 200 training samples of 1x28x28, the small CNN,
1 local epoch, batch 32, FedAvg, every hospital every round. Both sides train each hospital from
the global model, score the local model on the hospital's own test split, and average the models
weighted by samples. fedsim uses 2 single-core Ray workers; the plain loop uses 2 torch threads.
fedsim's task keeps models channels-last (faster CPU convolutions); the plain loop runs as a user
would write it, and once more channels-last too, so the gain from parallelism alone is visible.

    python experiments/bench/round_throughput.py [--rounds 6] [--systems]

Prints steady-state seconds per round of both, their ratio (target <= 0.8), and the first fedsim
round including the data build, Ray's and the workers' start-up against a steady round (target
<= 1.5x), beside Ray's own floor: ray.init plus worker processes importing torch, which bounds
the ratio from below on a small machine. `--systems` instead runs
fedsim twice, side by side, without and with a systems section (one always-online tier without
dropouts or deadline, so both do the same training: what differs is the engine's own cost of
profiles, the simulated clock and holding contributions until it settles), and prints their
ratio (target <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import ray
import torch
from torch.nn import functional as F

from fedsim.config import load_config
from fedsim.models import model_factory
from fedsim.torch_params import load_params, params_of
from fedsim.simulation import Simulation
from fedsim.tasks.factory import build_task

HOSPITALS, TRAIN_PER_HOSPITAL, TEST_PER_HOSPITAL = 100, 200, 50


def bench_overrides(rounds: int, workers: int) -> list[str]:
    """The benchmark setting as config overrides (shared with fedmrl_overhead.py)."""
    return [
        f"rounds={rounds}",
        "data.source={kind: synthetic, classes: 2, "
        f"train_samples: {HOSPITALS * (TRAIN_PER_HOSPITAL + TEST_PER_HOSPITAL)}, test_samples: 1000}}",
        f"data.hospitals={HOSPITALS}",
        "data.partition={scheme: iid}",
        f"data.local_test_fraction={TEST_PER_HOSPITAL / (TRAIN_PER_HOSPITAL + TEST_PER_HOSPITAL)}",
        "train={epochs: 1, batch_size: 32, lr: 0.05}",
        f"engine.workers={workers}",
        f"eval.every={rounds}",  # global evaluation only after the last round, on both sides
    ]


def bench_config(rounds: int, workers: int):
    return load_config(None, bench_overrides(rounds, workers))


def plain_loop(config, rounds: int, channels_last: bool) -> list[float]:
    """The same rounds as one process, no Ray: returns seconds per round."""
    torch.set_num_threads(2)
    federation = build_task(config).federation
    dataset = federation.dataset
    model = model_factory("small_cnn")(dataset.channels, dataset.num_classes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    global_params = params_of(model)
    sizes = np.array([len(p) for p in federation.train_parts], dtype=np.float64)
    timings = []
    for round_index in range(rounds):
        started = time.perf_counter()
        total = {k: np.zeros(v.shape) for k, v in global_params.items() if v.dtype.kind == "f"}
        for hospital in range(federation.num_hospitals):
            images, labels = (torch.from_numpy(a) for a in federation.hospital_arrays(hospital, "train"))
            load_params(model, global_params)
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
            generator = torch.Generator().manual_seed(round_index * 1000 + hospital)
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(labels), 32):
                batch = order[start : start + 32]
                loss = F.cross_entropy(model(images[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                test_images, test_labels = (torch.from_numpy(a) for a in federation.hospital_arrays(hospital, "test"))
                float((model(test_images).argmax(1) == test_labels).float().mean())
            weight = sizes[hospital] / sizes.sum()
            for name, value in params_of(model).items():
                if name in total:
                    total[name] += weight * value
        global_params = {k: total[k].astype(v.dtype) if k in total else v for k, v in global_params.items()}
        timings.append(time.perf_counter() - started)
    return timings


#: Profiles on, but every hospital kept: the same training as without (see --systems).
SYSTEMS_ON = "systems={tiers: [{name: bench, share: 1, samples_per_second: 1000, uplink: 1e7, downlink: 1e7}]}"


def systems_overhead(rounds: int, workers: int) -> None:
    """Steady seconds per round without and with system profiles, measured in one invocation."""
    off = fedsim_rounds(bench_config(rounds, workers))[1]
    on = fedsim_rounds(load_config(None, bench_overrides(rounds, workers) + [SYSTEMS_ON]))[1]
    off_steady, on_steady = (statistics.median(times[1:-1] or times[1:]) for times in (off, on))
    print(f"setting: {HOSPITALS} hospitals x {TRAIN_PER_HOSPITAL} samples, small CNN, 1 epoch, batch 32, FedAvg, {workers} workers")
    print(f"system profiles off: {off_steady:.2f} s per steady round  ({', '.join(f'{t:.2f}' for t in off)})")
    print(f"system profiles on:  {on_steady:.2f} s per steady round  ({', '.join(f'{t:.2f}' for t in on)})")
    print(f"ratio on / off: {on_steady / off_steady:.3f}  (target <= 1.05)")


def fedsim_rounds(config) -> tuple[float, list[float]]:
    """Seconds from building the run (data, Ray, workers, server) to the end of its first round,
    and seconds of every round."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        simulation = Simulation(config, f"{out}/run", quiet=True)
        built = time.perf_counter() - started
        summaries = simulation.run()
    return built + simulation.startup_seconds + summaries[0].seconds, [s.seconds for s in summaries]


@ray.remote
class _WorkerProcess:
    """An actor that imports what a fedsim worker imports, and nothing else."""

    def __init__(self) -> None:
        import fedsim.engine.worker, fedsim.tasks.classification  # noqa: F401

    def ready(self) -> bool:
        return True


def ray_start_floor(workers: int) -> float:
    """Seconds Ray itself needs before any round can start: ray.init of a local cluster and
    `workers` actor processes that import torch and the engine (what no engine change removes)."""
    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
    try:
        processes = [_WorkerProcess.options(num_cpus=1).remote() for _ in range(workers)]
        ray.get([p.ready.remote() for p in processes])
        return time.perf_counter() - started
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--systems", action="store_true", help="system profiles on against off, instead of the plain loop")
    args = parser.parse_args()
    if args.systems:
        systems_overhead(args.rounds, args.workers)
        return
    config = bench_config(args.rounds, args.workers)

    first_with_startup, fedsim_times = fedsim_rounds(config)
    plain_times = plain_loop(config, args.rounds, channels_last=False)
    plain_cl_times = plain_loop(config, args.rounds, channels_last=True)
    # steady state: drop the first round of each; the last fedsim round also evaluates globally
    fedsim_steady = statistics.median(fedsim_times[1:-1] or fedsim_times[1:])
    plain_steady = statistics.median(plain_times[1:])
    plain_cl_steady = statistics.median(plain_cl_times[1:])

    def listed(times: list[float]) -> str:
        return ", ".join(f"{t:.2f}" for t in times)

    print(f"setting: {HOSPITALS} hospitals x {TRAIN_PER_HOSPITAL} samples, small CNN, 1 epoch, batch 32, FedAvg")
    print(f"fedsim ({args.workers} workers x 1 CPU):        {fedsim_steady:.2f} s per steady round  ({listed(fedsim_times)})")
    print(f"plain PyTorch loop (2 threads):            {plain_steady:.2f} s per steady round  ({listed(plain_times)})")
    print(f"plain loop, channels-last (2 threads):     {plain_cl_steady:.2f} s per steady round  ({listed(plain_cl_times)})")
    print(f"ratio fedsim / plain: {fedsim_steady / plain_steady:.2f}  (target <= 0.80)")
    print(f"ratio fedsim / plain channels-last: {fedsim_steady / plain_cl_steady:.2f}  (parallelism alone)")
    floor = ray_start_floor(args.workers)
    print(f"first fedsim round incl. data, Ray and worker start-up: {first_with_startup:.2f} s = "
          f"{first_with_startup / fedsim_steady:.2f}x a steady round  (target <= 1.50)")
    print(f"  of which Ray's own floor (ray.init + {args.workers} workers importing torch and the engine): {floor:.2f} s; "
          f"floor + a steady round = {(floor + fedsim_steady) / fedsim_steady:.2f}x")


if __name__ == "__main__":
    main()
