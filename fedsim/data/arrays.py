"""Validated in-memory containers that every loader returns.

Loaders differ wildly in their input formats; checking the common (N, C, H, W) uint8 +
int64 label contract once here means the engine never has to re-check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.data.errors import DataError


@dataclass(frozen=True)
class ImageSet:
    """One split: square images (N, C, H, W) uint8 with C in {1, 3} and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
            raise DataError(f"images: expected a uint8 array of shape (N, C, H, W), got {_describe(images)}")
        if images.shape[1] not in (1, 3):
            raise DataError(f"images: expected 1 or 3 channels, got shape {images.shape}")
        if images.shape[2] != images.shape[3]:
            raise DataError(f"images: expected square images, got shape {images.shape}")
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype != np.int64:
            raise DataError(f"labels: expected an int64 array of shape (N,), got {_describe(labels)}")
        if len(labels) != len(images):
            raise DataError(f"labels: expected {len(images)} labels (one per image), got {len(labels)}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageDataset:
    """A named dataset whose splits share channels, image size and the class list."""

    name: str
    classes: tuple[str, ...]
    train: ImageSet
    val: ImageSet | None
    test: ImageSet

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise DataError(f"{self.name}: classes: expected at least 2 class names, got {self.classes!r}")
        shape = self.train.images.shape[1:]
        for split, data in self._splits():
            if data.images.shape[1:] != shape:
                raise DataError(
                    f"{self.name}: {split} images have shape {data.images.shape[1:]} per image, "
                    f"expected {shape} like train"
                )
            if len(data) and (data.labels.min() < 0 or data.labels.max() >= self.num_classes):
                raise DataError(
                    f"{self.name}: {split} labels: expected values in [0, {self.num_classes}), "
                    f"got [{data.labels.min()}, {data.labels.max()}]"
                )
        if not len(self.test):
            raise DataError(f"{self.name}: the test split is empty; the global model is scored on it, expected test images")

    def _splits(self) -> list[tuple[str, ImageSet]]:
        splits = [("train", self.train), ("val", self.val), ("test", self.test)]
        return [(split, data) for split, data in splits if data is not None]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[2]


def inferred_class_count(name: str, labels: dict[str, np.ndarray]) -> int:
    """K = max label + 1 over all splits, refused where some class in 0..K-1 has no sample at all
    (one stray label 7 in a binary set would otherwise make 8 classes)."""
    present = np.unique(np.concatenate([np.asarray(split, dtype=np.int64).reshape(-1) for split in labels.values()]))
    if not present.size:
        raise DataError(f"{name}: no labels in any split; expected labelled images")
    count = int(present.max()) + 1
    missing = np.setdiff1d(np.arange(count), present)
    if missing.size:
        shown = ", ".join(str(int(c)) for c in missing[:5]) + (", ..." if missing.size > 5 else "")
        where = [split for split, values in labels.items() if np.asarray(values).size and int(np.max(values)) == count - 1]
        raise DataError(
            f"{name}: labels: the class count would be inferred as {count} (max label {count - 1} in {', '.join(where)}) "
            f"but class(es) {shown} have no sample; expected labels 0..K-1 (fix the stray labels or give the class count)"
        )
    return count


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
