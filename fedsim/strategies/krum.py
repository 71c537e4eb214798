"""(Multi-)Krum (Blanchard et al., 2017): keep the updates closest to their neighbours.

With n updates of which at most f are Byzantine, each update i is scored by its squared distances
to its n - f - 2 nearest other updates,

    s(i) = sum_{j in N_i} ||Delta_i - Delta_j||^2,

Krum takes the update of lowest score; Multi-Krum (select = m > 1) averages the m lowest-scoring
updates. f = floor(byzantine * n); distances use the trained parameters (not normalisation
statistics), and the selected hospitals' statistics are averaged alike. Ties go to the lower
hospital id. Each hospital's score and whether it was selected are logged in clients.parquet.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedsim.params import is_statistic
from fedsim.protocol import Updates
from fedsim.strategies.robust import RobustConfig, RobustStrategy, stacked


class KrumConfig(RobustConfig):
    name: Literal["krum"] = "krum"
    byzantine: float = Field(0.2, ge=0, lt=0.5, description="f / n: the fraction of a round's hospitals assumed Byzantine")
    select: int = Field(1, ge=1, description="m: how many lowest-scoring updates are averaged (1 = Krum)")

    def build(self, config, task) -> "Krum":
        self.check_round_bytes(config, task)
        return Krum(self.byzantine, self.select)

    def check(self, config) -> None:
        n = config.clients_per_round()
        f = int(np.floor(self.byzantine * n))
        if n - f - 2 < 1:
            raise ValueError(f"strategy.byzantine: Krum needs n - f - 2 >= 1 neighbours, got n = {n} hospitals per round and f = {f}")
        if self.select > n - f:
            raise ValueError(f"strategy.select: expected at most n - f = {n - f} updates per round, got {self.select}")


class Krum(RobustStrategy):
    name = "krum"

    def __init__(self, byzantine: float, select: int) -> None:
        self.byzantine, self.select = byzantine, select
        self._last: dict[int, dict[str, float]] = {}

    def scores(self, updates: Updates) -> np.ndarray:
        """s(i) for every update, in the given order."""
        n = len(updates)
        neighbours = n - int(np.floor(self.byzantine * n)) - 2
        flat = np.concatenate([stacked(updates, name).reshape(n, -1) for name in updates[0][1] if not is_statistic(name)], axis=1)
        distances = np.stack([np.sum((flat - flat[i]) ** 2, axis=1) for i in range(n)])
        np.fill_diagonal(distances, np.inf)
        return np.sort(distances, axis=1)[:, : max(1, neighbours)].sum(axis=1)

    def combine(self, updates: Updates) -> dict[str, np.ndarray]:
        scores = self.scores(updates)
        chosen = np.argsort(scores, kind="stable")[: min(self.select, len(updates))]
        self._last = {hospital: {"krum_score": float(score), "krum_selected": float(i in chosen)}
                      for i, ((hospital, _), score) in enumerate(zip(updates, scores))}
        return {name: np.mean(stacked(updates, name)[np.sort(chosen)], axis=0) for name in updates[0][1]}

    def hospital_metrics(self) -> dict[int, dict[str, float]]:
        return self._last
