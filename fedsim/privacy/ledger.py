"""The run's privacy ledger (on the driver): the noise multiplier a run uses, epsilon after every
round, and whether the next round is still within the budget (see fedsim.privacy.accounting for
the analysis of each mechanism)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from fedsim.privacy.accounting import ORDERS, calibrate, epsilon, rdp
from fedsim.privacy.dp_sgd import dp_sgd_batches
from fedsim.privacy.settings import PrivacyConfig
from fedsim.protocol import Cohort

if TYPE_CHECKING:
    from fedsim.config import Config


class PrivacyLedger:
    """Per-hospital RDP curves, composed round by round."""

    def __init__(self, config: "Config", sizes: np.ndarray) -> None:
        assert config.privacy is not None
        self.spec: PrivacyConfig = config.privacy
        self.rounds = config.rounds
        self.sample_rate = config.clients_per_round() / config.num_hospitals()
        self.batch_size = config.train.batch_size
        self.max_epochs = config.train.epochs if config.train.epochs_mode == "fixed" else int(config.train.max_epochs or 0)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.budget = self.spec.target_epsilon if self.spec.target_epsilon is not None else math.inf
        self.noise_multiplier = noise_multiplier(self)
        self.curves = np.zeros((len(self.sizes), len(ORDERS)))

    def increments(self, cohort: Cohort, sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The hospitals a round with `cohort` spends privacy of, and the RDP each one spends."""
        sigma = self.noise_multiplier if sigma is None else sigma
        mechanism = self.spec.mechanism
        if mechanism == "central":
            everyone = np.arange(len(self.sizes))
            return everyone, np.tile(rdp(self.sample_rate, sigma, 1), (len(everyone), 1))
        if mechanism == "local":
            return cohort.hospitals, np.tile(rdp(1.0, sigma, 1), (len(cohort.hospitals), 1))
        curves = []
        for size, epochs in zip(cohort.sizes, cohort.epochs):
            batches = dp_sgd_batches(size, self.batch_size)
            curves.append(rdp(1.0 / batches, sigma, int(epochs) * batches))
        return cohort.hospitals, np.array(curves).reshape(len(cohort.hospitals), len(ORDERS))

    def epsilon_after(self, cohort: Cohort) -> float:
        """Epsilon the run would have spent after a round with `cohort`."""
        hospitals, spent = self.increments(cohort)
        curves = self.curves.copy()
        curves[hospitals] += spent
        return self._epsilon(curves)

    def affordable(self, cohort: Cohort) -> bool:
        return self.epsilon_after(cohort) <= self.budget * (1 + 1e-9)

    def record(self, cohort: Cohort) -> dict[str, float]:
        """Spend the round's privacy; the rounds.parquet columns."""
        hospitals, spent = self.increments(cohort)
        self.curves[hospitals] += spent
        return {"epsilon": self._epsilon(self.curves), "delta": self.spec.delta, "noise_multiplier": self.noise_multiplier}

    def _epsilon(self, curves: np.ndarray) -> float:
        unique = np.unique(curves, axis=0)
        return max(epsilon(curve, self.spec.delta) for curve in unique)

    def worst_case_epsilon(self, sigma: float) -> float:
        """Epsilon after all configured rounds if every hospital took part in every round with
        the most local epochs (central: every round, as accounted): what calibration plans for."""
        sizes = np.unique(self.sizes)
        cohort = Cohort(np.arange(len(sizes)), sizes, np.full(len(sizes), self.max_epochs, dtype=np.int64))
        _, spent = self.increments(cohort, sigma)
        return self._epsilon(np.unique(spent, axis=0) * self.rounds)


def noise_multiplier(ledger: PrivacyLedger) -> float:
    """The configured noise multiplier, or the one calibrated to spend target_epsilon in the
    configured rounds."""
    spec = ledger.spec
    if spec.noise_multiplier is not None:
        return spec.noise_multiplier
    assert spec.target_epsilon is not None
    return calibrate(ledger.worst_case_epsilon, spec.target_epsilon)


def run_noise_multiplier(config: "Config", sizes: np.ndarray) -> float:
    """The noise multiplier a run of `config` uses (every part of a run derives it the same way)."""
    return PrivacyLedger(config, sizes).noise_multiplier
