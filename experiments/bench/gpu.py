"""GPU throughput: hospitals trained per second, per-hospital loop vs shared GPUs vs vectorised cohorts.

Setting: `--hospitals` (64) synthetic hospitals of `--samples` (50) 1x28x28 images (4 classes,
IID), all sampled every round, 1 local epoch of batch-16 SGD, FedAvg; the global test set is
scored only after the last round, so steady rounds are training only. For the small CNN and
ResNet-18, side by side in one run, on a local Ray cluster:

- loop, 1 worker x 1 GPU (`engine.num_gpus: 1`): one hospital at a time;
- loop, 2 workers x 0.5 GPU and 4 workers x 0.25 GPU: fractional placement, workers share the GPU;
- vectorised, 1 worker x 1 GPU with `engine.vectorized_hospitals: --group` (32): that many
  hospitals trained at once as one vmapped model (fedsim.tasks.vectorized).

Hospitals per second = hospitals per round / median steady round (rounds 2..n-1).
Target (issue 16): vectorised >= 5x the 1-worker loop for the small CNN on a GPU.

    python experiments/bench/gpu.py [--rounds 4] [--hospitals 64] [--samples 50] [--group 32]
    python experiments/bench/gpu.py --device cpu --hospitals 4 --samples 20 --rounds 3   # smoke test

Without a CUDA GPU visible to torch it stops with one line (exit 2). `--device cpu` runs the same
rows on the in-process backend without GPUs (workers then take turns in one process): it only
checks that the script runs, its numbers mean nothing about GPUs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from typing import NamedTuple

MODELS = ("small_cnn", "resnet18")
TARGET = 5.0


class Setting(NamedTuple):
    label: str
    workers: int
    num_gpus: float
    vectorized: int


def settings(group: int) -> list[Setting]:
    return [
        Setting("loop, 1 worker x 1 GPU", 1, 1.0, 0),
        Setting("loop, 2 workers x 0.5 GPU", 2, 0.5, 0),
        Setting("loop, 4 workers x 0.25 GPU", 4, 0.25, 0),
        Setting(f"vectorised ({group} at once), 1 worker x 1 GPU", 1, 1.0, group),
    ]


def hospitals_per_second(model: str, setting: Setting, args: argparse.Namespace) -> float:
    from fedsim.config import load_config
    from fedsim.simulation import Simulation

    gpu = args.device == "cuda"
    config = load_config(None, [
        f"rounds={args.rounds}",
        f"data.source={{kind: synthetic, classes: 4, train_samples: {args.hospitals * args.samples}, test_samples: 200}}",
        f"data.hospitals={args.hospitals}",
        "data.partition={scheme: iid}",
        f"model.name={model}",
        "train.epochs=1",
        "eval.hospitals=sampled",
        f"eval.every={args.rounds}",
        f"engine.backend={'ray' if gpu else 'in_process'}",
        f"engine.workers={setting.workers}",
        f"engine.num_gpus={setting.num_gpus if gpu else 0}",
        "engine.num_cpus=1",
        f"engine.vectorized_hospitals={setting.vectorized}",
        "engine.checkpoint_every=0",
    ])
    with tempfile.TemporaryDirectory() as folder:
        seconds = [summary.seconds for summary in Simulation(config, f"{folder}/run", quiet=True).run()]
    steady = seconds[1:-1] or seconds
    return args.hospitals / statistics.median(steady)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--hospitals", type=int, default=64, help="hospitals, all sampled every round")
    parser.add_argument("--samples", type=int, default=50, help="samples per hospital")
    parser.add_argument("--group", type=int, default=32, help="engine.vectorized_hospitals of the vectorised row")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
              "run it on a GPU node, or with --device cpu for a smoke test", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (smoke test: in-process, no GPU)"
    print(f"device: {where}; {args.hospitals} hospitals x {args.samples} samples, all sampled, 1 epoch, batch 16, "
          f"{args.rounds} rounds (median of rounds 2..{args.rounds - 1})")
    print(f"{'model':<10}  {'setting':<42}  hospitals/s  vs loop")
    for model in args.models:
        baseline = None
        for setting in settings(args.group):
            rate = hospitals_per_second(model, setting, args)
            baseline = baseline or rate
            print(f"{model:<10}  {setting.label:<42}  {rate:>11.1f}  {rate / baseline:>6.2f}x", flush=True)
    print(f"target: vectorised >= {TARGET:g}x the 1-worker loop for small_cnn on a GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
