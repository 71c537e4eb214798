"""Scheduling metrics: what an episode is scored by, per hospital and over a network.

A patient's wait runs from arrival to admission (for a transfer out of the single-hospital env:
to departure plus the transfer delay). Patients still waiting when the episode ends count with
the wait so far (censored), so a policy cannot look good by never serving a queue. Waits are in
hours; per-episode quantities (return, completions, transfers, utilisation) are averaged over
episodes (and over hospitals, for a network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from fedsim.scheduling.config import ACUITY_LEVELS, HIGH_ACUITY
from fedsim.scheduling.hospital import Hospital, Patient

ACUITIES = range(1, ACUITY_LEVELS + 1)

#: Every metric `summarise` returns, in a fixed order (the task's global_metric_names).
METRIC_NAMES: tuple[str, ...] = (
    "wait_mean",
    "wait_p95",
    *(f"wait_mean_acuity_{a}" for a in ACUITIES),
    *(f"wait_p95_acuity_{a}" for a in ACUITIES),
    f"wait_p95_acuity_1_{HIGH_ACUITY}",
    "acuity_weighted_wait",
    "utilisation",
    "completed_high_acuity",
    "transfers",
    "episode_return",
)


@dataclass(frozen=True)
class EpisodeLog:
    """One hospital's episode: every patient's (acuity, wait) and the episode's totals."""

    acuity: np.ndarray  # int64, one per patient admitted, transferred out (single env) or still waiting
    wait: np.ndarray  # float64 hours, aligned with `acuity`
    episode_return: float
    completed_high_acuity: int
    transfers: int
    utilisation: float  # mean over steps of busy beds / nominal beds (above 1 when surge beds are used)


@dataclass
class Recorder:
    """Builds an EpisodeLog from an env's steps."""

    beds: int
    transfers_final: bool  # True in the single-hospital env: a transfer ends the patient's wait here
    transfer_hours: float
    acuity: list[int] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    total_reward: float = 0.0
    completed_high: int = 0
    transfers: int = 0
    busy: int = 0
    steps: int = 0

    def record(self, reward: float, info: dict[str, Any]) -> None:
        self.total_reward += reward
        for acuity, wait in info["admitted"]:
            self.acuity.append(acuity)
            self.wait.append(wait)
        for acuity, wait in info["transferred_waits"]:
            self.transfers += 1
            if self.transfers_final:
                self.acuity.append(acuity)
                self.wait.append(wait + self.transfer_hours)
        self.completed_high += sum(1 for patient in info["completed"] if patient.acuity <= HIGH_ACUITY)
        self.busy += info["busy_beds"]
        self.steps += 1

    def finish(self, still_waiting: Iterable[Patient], now: int, dt: float) -> EpisodeLog:
        for patient in still_waiting:
            self.acuity.append(patient.acuity)
            self.wait.append((now - patient.arrival) * dt)
        return EpisodeLog(
            acuity=np.asarray(self.acuity, dtype=np.int64),
            wait=np.asarray(self.wait, dtype=np.float64),
            episode_return=self.total_reward,
            completed_high_acuity=self.completed_high,
            transfers=self.transfers,
            utilisation=self.busy / (self.steps * self.beds) if self.steps else float("nan"),
        )

    @classmethod
    def for_hospital(cls, hospital: Hospital, transfers_final: bool) -> "Recorder":
        return cls(hospital.profile.beds, transfers_final, hospital.transfer_steps * hospital.dt)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _p95(values: np.ndarray) -> float:
    return float(np.percentile(values, 95)) if values.size else float("nan")


def summarise(logs: Sequence[EpisodeLog], acuity_weights: Sequence[float]) -> dict[str, float]:
    """METRIC_NAMES over the pooled patients of `logs`; acuity_weighted_wait is
    sum_i w(a_i) wait_i / sum_i w(a_i) with the reward's acuity weights w."""
    acuity = np.concatenate([log.acuity for log in logs])
    wait = np.concatenate([log.wait for log in logs])
    weights = np.asarray(acuity_weights, dtype=np.float64)[acuity - 1]
    metrics = {"wait_mean": _mean(wait), "wait_p95": _p95(wait)}
    metrics.update({f"wait_mean_acuity_{a}": _mean(wait[acuity == a]) for a in ACUITIES})
    metrics.update({f"wait_p95_acuity_{a}": _p95(wait[acuity == a]) for a in ACUITIES})
    metrics[f"wait_p95_acuity_1_{HIGH_ACUITY}"] = _p95(wait[acuity <= HIGH_ACUITY])
    metrics["acuity_weighted_wait"] = float(weights @ wait / weights.sum()) if weights.sum() > 0 else float("nan")
    for name in ("utilisation", "completed_high_acuity", "transfers", "episode_return"):
        metrics[name] = float(np.mean([getattr(log, name) for log in logs]))
    return {name: metrics[name] for name in METRIC_NAMES}
