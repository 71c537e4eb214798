"""Update compression as update stages, with the bytes each encoding really puts on the wire.

- Stochastic uniform quantisation (QSGD-style, Alistarh et al. 2017): each array's entries are
  rounded to one of 2^b evenly spaced levels between its min and max, up or down at random with
  the probabilities that make it unbiased, E[Q(x)] = x:
      t = (x - lo) / s,  Q(x) = lo + s * (floor(t) + Bernoulli(t - floor(t))),  s = (hi - lo) / (2^b - 1).
  Wire: b bits per entry plus lo and hi in float32.
- Top-k sparsification with error feedback (Stich et al. 2018; Karimireddy et al. 2019): the
  hospital sends the k = ceil(fraction * d) largest-magnitude entries of u = delta + e and keeps
  e <- u - topk(u) as its state for its next round (held by the engine). Wire: per sent entry a
  float32 value and an int32 index.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedsim.params import Params
from fedsim.pipeline.base import HospitalContext, UpdateStage

FLOAT32, INDEX = 4, 4


def quantize(values: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if high == low:
        return values.copy()
    step = (high - low) / (2**bits - 1)
    scaled = (values - low) / step
    floor = np.floor(scaled)
    up = rng.random(values.shape) < (scaled - floor)
    return low + step * np.minimum(floor + up, 2**bits - 1)


class Quantize(UpdateStage):
    def __init__(self, bits: int) -> None:
        self.bits = bits

    def hospital(self, update: Params, context: HospitalContext, state: Any) -> tuple[Params, Any, dict[str, float]]:
        rng = np.random.default_rng(context.seed)
        return {name: quantize(delta, self.bits, rng) if delta.size else delta for name, delta in update.items()}, state, {}

    def wire_bytes(self, update: Params, context: HospitalContext) -> dict[str, int]:
        return {name: math.ceil(delta.size * self.bits / 8) + 2 * FLOAT32 for name, delta in update.items()}


class TopK(UpdateStage):
    keeps_hospital_state = True

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def hospital(self, update: Params, context: HospitalContext, residual: Any) -> tuple[Params, Any, dict[str, float]]:
        residual = residual or {}
        corrected = {name: delta + residual.get(name, 0.0) for name, delta in update.items()}
        flat = np.concatenate([u.ravel() for u in corrected.values()]) if corrected else np.zeros(0)
        keep = min(flat.size, math.ceil(self.fraction * flat.size))
        mask = np.zeros(flat.size, dtype=bool)
        if keep:
            mask[np.argpartition(np.abs(flat), flat.size - keep)[flat.size - keep :]] = True
        sent, left, offset = {}, {}, 0
        for name, u in corrected.items():
            chosen = mask[offset : offset + u.size].reshape(u.shape)
            offset += u.size
            sent[name] = np.where(chosen, u, 0.0)
            left[name] = u - sent[name]
        residual_norm = float(np.sqrt(sum(float(np.sum(r**2)) for r in left.values())))
        return sent, left, {"residual_norm": residual_norm}

    def wire_bytes(self, update: Params, context: HospitalContext) -> dict[str, int]:
        return {name: int(np.count_nonzero(delta)) * (FLOAT32 + INDEX) for name, delta in update.items()}
