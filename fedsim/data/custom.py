"""A user's own data as a fedsim dataset: numpy arrays, or any torch `Dataset` of (image, label).

Every split is stored as fedsim stores all data (uint8 images (N, C, H, W), int64 labels), so it
goes into Ray's object store once and is partitioned like any loader's: float images in [0, 1] are
rounded to 1/255 steps. Pass the result to `fedsim.run(config, dataset=...)`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fedsim.data.arrays import ImageDataset, ImageSet, inferred_class_count
from fedsim.data.errors import DataError

#: A split: (images, labels) arrays, or a torch Dataset yielding (image, label) pairs.
Split = Any


def dataset_from_arrays(
    train: Split,
    test: Split,
    val: Split | None = None,
    *,
    classes: int | Sequence[str] | None = None,
    name: str = "custom",
) -> ImageDataset:
    """A dataset from the user's splits. `classes`: the class count or names (inferred as
    max label + 1 over all splits when omitted)."""
    splits = {"train": _image_set("train", train), "test": _image_set("test", test)}
    if val is not None:
        splits["val"] = _image_set("val", val)
    if classes is None:
        classes = inferred_class_count(name, {split: data.labels for split, data in splits.items()})
    names = tuple(str(c) for c in range(classes)) if isinstance(classes, int) else tuple(str(c) for c in classes)
    return ImageDataset(name=name, classes=names, train=splits["train"], val=splits.get("val"), test=splits["test"])


def _image_set(split: str, data: Split) -> ImageSet:
    images, labels = data if isinstance(data, tuple) else _from_torch(split, data)
    return ImageSet(_as_uint8_nchw(split, np.asarray(images)), _as_labels(split, np.asarray(labels)))


def _from_torch(split: str, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stack a map-style torch Dataset's (image, label) pairs."""
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise DataError(f"{split}: expected (images, labels) arrays or a torch Dataset of (image, label), got {type(dataset).__name__}")
    pairs = [dataset[i] for i in range(len(dataset))]
    if not pairs:
        raise DataError(f"{split}: the dataset is empty")
    return np.stack([np.asarray(image) for image, _ in pairs]), np.array([int(label) for _, label in pairs])


def _as_uint8_nchw(split: str, images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4:
        raise DataError(f"{split} images: expected (N, H, W), (N, C, H, W) or (N, H, W, C), got shape {images.shape}")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{split} images: expected uint8 or floats in [0, 1], got {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise DataError(f"{split} images: expected floats in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}]")
    return np.ascontiguousarray(np.rint(images * 255.0).astype(np.uint8))


def _as_labels(split: str, labels: np.ndarray) -> np.ndarray:
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{split} labels: expected integers of shape (N,), got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)
