"""Loader for ISIC 2018 Task 3 (dermoscopy, 7 lesion classes) in its official folder layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fedsim.data.arrays import ImageDataset, ImageSet
from fedsim.data.errors import DataError
from fedsim.data.images import read_rgb_images
from fedsim.data.splits import stratified_split, take

_PREFIX = "ISIC2018_Task3"
_TEST_FRACTION = 0.2


def load_isic2018(root: str | Path, image_size: int = 28, seed: int = 0) -> ImageDataset:
    """Training (+ optional Validation and Test) pairs under ``root``; classes from the CSV header.

    Without a Test pair, a seeded stratified 20% of training is held out as test.
    """
    root = Path(root)
    classes, train = _read_pair(root, "Training", image_size)
    val, test = None, None
    for split in ("Validation", "Test"):
        pair = _read_pair(root, split, image_size, required=False)
        if pair is None:
            continue
        split_classes, data = pair
        if split_classes != classes:
            raise DataError(f"{_csv_path(root, split)}: classes {split_classes} differ from Training's {classes}")
        if split == "Validation":
            val = data
        else:
            test = data
    if test is None:
        keep, held_out = stratified_split(train.labels, _TEST_FRACTION, seed)
        train, test = take(train.images, train.labels, keep), take(train.images, train.labels, held_out)
    return ImageDataset(name="isic2018", classes=classes, train=train, val=val, test=test)


def _csv_path(root: Path, split: str) -> Path:
    return root / f"{_PREFIX}_{split}_GroundTruth" / f"{_PREFIX}_{split}_GroundTruth.csv"


def _read_pair(
    root: Path, split: str, image_size: int, required: bool = True
) -> tuple[tuple[str, ...], ImageSet] | None:
    """(classes, images) of one Input/GroundTruth pair; None when an optional pair is absent."""
    input_dir, csv_path = root / f"{_PREFIX}_{split}_Input", _csv_path(root, split)
    if not required and not input_dir.exists() and not csv_path.exists():
        return None
    for needed in (input_dir, csv_path):
        if not needed.exists():
            raise DataError(
                f"{needed}: not found (ISIC 2018 {split} needs both the Input folder and the GroundTruth CSV)"
            )
    classes, names, labels = _read_ground_truth(csv_path)
    images = read_rgb_images([input_dir / f"{name}.jpg" for name in names], image_size)
    return classes, ImageSet(images=images, labels=labels)


def _read_ground_truth(csv_path: Path) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Class names, image ids and labels from a one-hot ground-truth CSV."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if len(header) < 3 or header[0] != "image":
        raise DataError(f"{csv_path}: expected a header 'image,<class>,<class>,...' with at least two classes")
    classes = tuple(header[1:])
    names, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            values = np.array([float(cell) for cell in row[1:]]) if len(row) == len(classes) + 1 else None
        except ValueError:
            values = None
        if values is None or not np.isin(values, (0.0, 1.0)).all() or values.sum() != 1:
            raise DataError(
                f"{csv_path}: row {line}: expected an image id and a one-hot label over {len(classes)} classes, got {row}"
            )
        names.append(row[0].strip())
        labels.append(int(values.argmax()))
    if not names:
        raise DataError(f"{csv_path}: no image rows")
    return classes, names, np.array(labels, dtype=np.int64)
