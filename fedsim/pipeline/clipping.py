"""Update norm clipping: each hospital's update is scaled to L2 norm at most C,

    delta_k <- delta_k * min(1, C / ||delta_k||_2)

(the norm over all shared trained parameters together, as in DP-FedAvg, McMahan et al. 2018),
which bounds any one hospital's influence on the aggregate. The pre-clip norm is logged per
hospital (`update_norm` in clients.parquet, with `clipped` 1 or 0).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from fedsim.params import Params
from fedsim.pipeline.base import HospitalContext, StageConfig, UpdateStage


class ClipConfig(StageConfig):
    stage: Literal["clip"] = "clip"
    max_norm: float = Field(gt=0, description="C: the largest L2 norm a hospital's update may have")

    def build(self, config, task) -> "NormClip":
        return NormClip(self.max_norm)


def update_norm(update: Params) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(delta))) for delta in update.values())))


class NormClip(UpdateStage):
    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        norm = update_norm(update)
        clipped = norm > self.max_norm
        if clipped:
            scale = self.max_norm / norm
            update = {name: delta * scale for name, delta in update.items()}
        return update, state, {"update_norm": norm, "clipped": float(clipped)}
