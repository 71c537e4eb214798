"""Seeded stratified hold-out splits for datasets that ship without an official test or
validation set."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedsim.data.arrays import ImageDataset, ImageSet
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


def with_validation(dataset: ImageDataset, fraction: float, seed: int) -> ImageDataset:
    """`dataset` with a validation split: its own where it ships one, otherwise a seeded,
    stratified `fraction` of the training split (taken out of training), so a learning strategy's
    feedback never has to come from the test split."""
    if dataset.val is not None:
        return dataset
    train = dataset.train
    keep, held_out = stratified_split(train.labels, fraction, seed)
    return replace(dataset, train=take(train.images, train.labels, keep), val=take(train.images, train.labels, held_out))
