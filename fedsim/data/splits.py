"""Seeded stratified hold-out splits for datasets that ship without an official test set."""

from __future__ import annotations

import numpy as np

from fedsim.data.arrays import ImageSet
from fedsim.data.errors import DataError


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (keep, held_out) indices with round(fraction * N) held out, class shares preserved.

    Samples are shuffled within their class, laid out class after class, and every
    1/fraction-th position is held out (systematic sampling), so each class contributes
    within one sample of its proportional share and the total is exact.
    """
    labels = np.asarray(labels)
    if not 0 < fraction < 1:
        raise DataError(f"fraction: expected a value in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    position = np.arange(len(order))
    held_out = np.floor((position + 1) * fraction + 0.5) > np.floor(position * fraction + 0.5)
    return np.sort(order[~held_out]), np.sort(order[held_out])


def take(images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> ImageSet:
    """The ImageSet of the given rows."""
    return ImageSet(images=images[indices], labels=labels[indices])
