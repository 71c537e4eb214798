"""A tiny numpy-only task for engine tests: each hospital pulls a vector towards its own target.

Small enough to compute by hand, stateful (counts each hospital's rounds) so the engine's
hospital-state bookkeeping can be checked, and random (seeded noise) so seed streams matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.params import Params
from fedsim.protocol import Cohort, LocalPlan, LocalResult
from fedsim.tasks.base import Task


class ToyTask(Task):
    keeps_hospital_state = True
    global_metric_names = ("accuracy",)
    headline_metric = "accuracy"
    hospital_metric = "accuracy"

    def __init__(self, num_hospitals: int = 6, dim: int = 5, noise: float = 0.01) -> None:
        rng = np.random.default_rng(123)
        self.targets = rng.normal(size=(num_hospitals, dim)).astype(np.float32)
        self.sizes = rng.integers(5, 50, size=num_hospitals)
        self.noise = noise

    @property
    def num_hospitals(self) -> int:
        return len(self.targets)

    def hospital_sizes(self) -> np.ndarray:
        return self.sizes

    def initial_params(self, seed: int) -> Params:
        return {"w": np.zeros(self.targets.shape[1], dtype=np.float32), "count": np.zeros((), dtype=np.int64)}

    def local_update(self, hospital: int, w: np.ndarray, seed: int, epochs: int = 1) -> np.ndarray:
        """`epochs` steps halfway towards the hospital's target, plus seeded noise."""
        for _ in range(epochs):
            w = w + 0.5 * (self.targets[hospital] - w)
        jitter = np.random.default_rng(seed).normal(scale=self.noise, size=w.shape)
        return (w + jitter).astype(np.float32)

    def train(self, hospital: int, params: Params, plan: LocalPlan, state: Any, seed: int) -> LocalResult:
        times_trained = (state or 0) + 1
        epochs = plan.epochs
        w = self.local_update(hospital, params["w"], seed, epochs)
        metrics = {"times_trained": float(times_trained)}
        return LocalResult({"w": w, "count": params["count"]}, int(self.sizes[hospital]), epochs, metrics, times_trained)

    def evaluate_hospital(self, hospital: int, params: Params, state: Any, batch_statistics: bool = False) -> dict[str, float]:
        distance = float(np.linalg.norm(params["w"] - self.targets[hospital]))
        return {"accuracy": 1.0 / (1.0 + distance), "times_trained": float(state or 0)}

    def global_eval_units(self) -> int:
        return 3

    def evaluate_unit(self, unit: int, params: Params, batch_statistics: bool = False) -> Any:
        return float(params["w"][unit % len(params["w"])])

    def global_metrics(self, outputs: list[Any]) -> dict[str, float]:
        return {"accuracy": float(np.mean(outputs))}


def full_cohort(task: ToyTask, hospitals: list[int] | None = None, epochs: list[int] | None = None) -> Cohort:
    """A cohort of the given hospitals (default all) with the given local epochs (default 1)."""
    ids = np.array(hospitals if hospitals is not None else range(task.num_hospitals))
    work = np.array(epochs if epochs is not None else [1] * len(ids), dtype=np.int64)
    return Cohort(ids, task.hospital_sizes()[ids], work)


def first_round_updates(task: ToyTask, run_seed: int) -> list[np.ndarray]:
    """Each hospital's round-1 update from the zero model, as the engine's seed streams make it."""
    from fedsim.seeding import Stream, seed_for

    start = np.zeros(task.targets.shape[1], dtype=np.float32)
    return [task.local_update(h, start, seed_for(run_seed, Stream.LOCAL_TRAINING, 1, h)).astype(np.float64) - start
            for h in range(task.num_hospitals)]
