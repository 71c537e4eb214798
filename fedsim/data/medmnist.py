"""Loader for MedMNIST v2 .npz files (official layout), the real-data path of the simulator."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fedsim.data.arrays import ImageDataset, ImageSet, inferred_class_count
from fedsim.data.errors import DataError

_SPLITS = ("train", "val", "test")


def load_medmnist(path: str | Path) -> ImageDataset:
    """Single-label MedMNIST 2D dataset; class names are "0", "1", ... (the .npz has none)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: MedMNIST file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a MedMNIST .npz archive")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz archive (a zip of .npy arrays); expected a MedMNIST .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    with archive:
        arrays = {key: _get(archive, path, key) for split in _SPLITS for key in (f"{split}_images", f"{split}_labels")}
    sets = {split: _image_set(path, split, arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in _SPLITS}
    num_classes = inferred_class_count(str(path), {split: data.labels for split, data in sets.items()})
    return ImageDataset(
        name=path.stem,
        classes=tuple(str(label) for label in range(num_classes)),
        train=sets["train"],
        val=sets["val"],
        test=sets["test"],
    )


def _get(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    if key not in archive.files:
        raise DataError(f"{path}: missing key {key!r} (expected the official MedMNIST layout)")
    return archive[key]


def _image_set(path: Path, split: str, images: np.ndarray, labels: np.ndarray) -> ImageSet:
    if images.dtype != np.uint8:
        raise DataError(f"{path}: {split}_images: expected uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[3] == 3:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: {split}_images: expected (N, H, W) or (N, H, W, 3), got {images.shape}")
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{path}: {split}_labels has {labels.shape[1]} columns; multi-label datasets are not supported")
    if labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {split}_labels: expected integer (N,) or (N, 1), got {labels.dtype} {labels.shape}")
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: {split}_labels: expected non-negative class ids, got {labels.min()}")
    try:
        return ImageSet(images=np.ascontiguousarray(images), labels=labels)
    except DataError as error:
        raise DataError(f"{path}: {split}: {error}") from error
