"""SOM aggregation weights: favour hospitals whose updates sit with the majority.

Updates are first scaled layer by layer to unit norm (so the classifier head, where label noise
shows, weighs as much as the much larger feature layers, whose early updates look alike at every
site) and compressed by a fixed, seeded count sketch (each parameter goes to one of `k` buckets
with a random sign; inner products are preserved in expectation): one pass over the update
whatever the model size, and the map sees k numbers per hospital.

The server keeps one `minisom` map across rounds and trains it on each round's unit-norm
sketches. With W_h the codebook vector of hospital h's best-matching unit, S the round's cohort
and m the median squared codebook distance over pairs of distinct hospitals in S:

    density_h = (1/|S|) * sum_{g in S} exp(-||W_h - W_g||^2 / (2 m))
    weight_h  = n_h * density_h / sum_{g in S} n_g * density_g

(all densities are 1 when every hospital shares one unit, m = 0). The median makes the kernel
width adapt to the round: the majority's mutual distances set the scale, an outlier sits beyond it.

A hospital whose update lands in a crowded region of the map keeps its sample share; one that
lands alone far away (a label-flipped or broken site) is discounted.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np
from minisom import MiniSom

from fedsim.seeding import Stream, seed_for


class CountSketch:
    """A fixed random projection of named arrays to `k` numbers, the same on every worker."""

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.seed = k, seed
        self._plans: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def _plan(self, name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Buckets and signs of one parameter, keyed by its full name (a digest of all of it, so
        same-size layers with a common prefix, such as blocks.10.w and blocks.11.w, differ)."""
        key = (name, size)
        if key not in self._plans:
            name_key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
            key_seed = seed_for(self.seed, Stream.SKETCH, name_key, size)
            rng = np.random.default_rng(key_seed)
            self._plans[key] = (rng.integers(0, self.k, size, dtype=np.int32), rng.choice(np.array([-1.0, 1.0]), size))
        return self._plans[key]

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        total = np.zeros(self.k)
        for name, array in arrays.items():
            flat = np.asarray(array, dtype=np.float64).ravel()
            buckets, signs = self._plan(name, flat.size)
            total += np.bincount(buckets, weights=signs * flat, minlength=self.k)
        return total

    def __getstate__(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed, "_plans": {}}  # plans are rebuilt where used


def layerwise_unit(update: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each tensor of an update scaled to unit norm (zero tensors stay zero)."""
    scaled = {}
    for name, array in update.items():
        norm = float(np.linalg.norm(array))
        scaled[name] = array / norm if norm > 0 else array
    return scaled


class SOMWeighting:
    """The server's persistent map and the density weights above."""

    def __init__(self, k: int, grid: int, seed: int, iterations_per_round: int = 200) -> None:
        self.grid = grid
        self.iterations = iterations_per_round
        self.som = MiniSom(grid, grid, k, sigma=1.0, learning_rate=0.5, random_seed=seed % 2**32)
        self.initialised = False

    def weights(self, sketches: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Train the map on this round's sketches; return (weights, densities), in cohort order."""
        norms = np.linalg.norm(sketches, axis=1, keepdims=True)
        data = sketches / np.where(norms > 0, norms, 1.0)
        if not self.initialised:
            self.som.random_weights_init(data)
            self.initialised = True
        self.som.train(data, self.iterations, random_order=False)
        codebook = self.som.get_weights()
        units = np.array([codebook[self.som.winner(x)] for x in data])
        densities = som_densities(units)
        raw = sizes.astype(np.float64) * densities
        return raw / raw.sum(), densities


def som_densities(units: np.ndarray) -> np.ndarray:
    """density_h = mean_g exp(-||W_h - W_g||^2 / (2 m)), m = median pairwise squared distance."""
    squared = ((units[:, None, :] - units[None, :, :]) ** 2).sum(axis=-1)
    pairs = squared[np.triu_indices(len(units), k=1)]
    scale = float(np.median(pairs)) if pairs.size else 0.0
    if scale <= 0:
        return np.ones(len(units))
    return np.exp(-squared / (2 * scale)).mean(axis=1)
