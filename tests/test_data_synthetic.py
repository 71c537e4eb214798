"""Synthetic generator: layout, balance, determinism, and learnable-but-not-trivial difficulty."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.data import DataError, ImageDataset, make_synthetic


@pytest.fixture(scope="module")
def default_dataset() -> ImageDataset:
    return make_synthetic(seed=0)


def pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255


def test_default_layout(default_dataset: ImageDataset) -> None:
    data = default_dataset
    assert data.train.images.shape == (4000, 1, 28, 28) and data.train.images.dtype == np.uint8
    assert data.test.images.shape == (1000, 1, 28, 28)
    assert data.train.labels.dtype == np.int64
    assert data.num_classes == 4 and data.classes[0] == "normal"
    assert data.val is None
    assert data.train.images.std() > 20  # not a blank canvas


@pytest.mark.parametrize("num_classes", [2, 4, 10])
def test_classes_balanced(num_classes: int) -> None:
    data = make_synthetic(num_classes=num_classes, train_samples=503, test_samples=101, seed=1)
    assert len(set(data.classes)) == num_classes
    for split in (data.train, data.test):
        counts = np.bincount(split.labels, minlength=num_classes)
        assert counts.max() - counts.min() <= 1


def test_seeded_and_streams_differ() -> None:
    first, again, other = (make_synthetic(train_samples=300, test_samples=300, seed=s) for s in (7, 7, 8))
    assert np.array_equal(first.train.images, again.train.images)
    assert np.array_equal(first.test.labels, again.test.labels)
    assert not np.array_equal(first.train.images, other.train.images)
    assert not np.array_equal(first.train.images, first.test.images)


def test_rgb_64_has_per_channel_tints() -> None:
    data = make_synthetic(train_samples=200, test_samples=50, image_size=64, channels=3, seed=0)
    assert data.train.images.shape == (200, 3, 64, 64)
    assert data.image_size == 64 and data.channels == 3
    channel_means = data.train.images.mean(axis=(0, 2, 3))
    assert channel_means[0] - channel_means[2] > 10  # pinkish tissue: red above blue


def test_nearest_class_mean_is_above_chance_but_far_from_perfect(default_dataset: ImageDataset) -> None:
    data = default_dataset
    train, test = pixels(data.train.images), pixels(data.test.images)
    means = np.stack([train[data.train.labels == c].mean(axis=0) for c in range(data.num_classes)])
    distances = (test**2).sum(1)[:, None] - 2 * test @ means.T + (means**2).sum(1)[None]
    accuracy = (distances.argmin(axis=1) == data.test.labels).mean()
    assert 0.35 < accuracy < 0.95, accuracy


def test_linear_model_learns_something_but_not_everything(default_dataset: ImageDataset) -> None:
    """One-vs-rest ridge regression on standardised pixels: the cheapest learnable probe."""
    data = default_dataset
    train, test = pixels(data.train.images), pixels(data.test.images)
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    targets = np.eye(data.num_classes)[data.train.labels]
    weights = np.linalg.solve(train.T @ train + 100.0 * np.eye(train.shape[1]), train.T @ targets)
    accuracy = ((test @ weights).argmax(axis=1) == data.test.labels).mean()
    assert 0.35 < accuracy < 0.9, accuracy


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"channels": 2}, "channels"),
        ({"train_samples": 0}, "train_samples"),
        ({"image_size": 4}, "image_size"),
    ],
)
def test_bad_arguments(kwargs: dict, parameter: str) -> None:
    with pytest.raises(DataError, match=parameter):
        make_synthetic(**kwargs)


def test_lazily_generated_hospitals_are_bitwise_the_eagerly_stored_ones() -> None:
    """Synthetic hospitals generated on the worker from (seed, hospital, split) equal a federation
    whose driver drew every hospital's images up front and stored them in one shared array."""
    from dataclasses import replace

    from fedsim.config import load_config
    from fedsim.data.arrays import ImageSet
    from fedsim.data.federation import build_federation
    from fedsim.tasks.classification import ClassificationTask
    from fedsim.models import model_factory
    from in_process import one_round
    from toy_task import full_cohort

    config = load_config(None, ["data.source={kind: synthetic, classes: 3, train_samples: 300, test_samples: 40}",
                                "data.hospitals=5", "data.scanner_shift=0.4", "train.epochs=1"])
    lazy = build_federation(config.data, seed=3)
    assert lazy.generated is not None and len(lazy.dataset.train) == 0  # the driver holds no training image
    stored = np.zeros((len(lazy.train_labels), *lazy.dataset.test.images.shape[1:]), dtype=np.uint8)
    for hospital in range(lazy.num_hospitals):
        for split, parts in (("train", lazy.train_parts), ("test", lazy.test_parts)):
            indices = parts[hospital]
            stored[indices] = lazy.generated.images(hospital, split, lazy.train_labels[indices])
    eager = replace(lazy, dataset=replace(lazy.dataset, train=ImageSet(stored, lazy.train_labels)), generated=None)
    for hospital in range(lazy.num_hospitals):
        for split in ("train", "test"):
            (a, la), (b, lb) = lazy.hospital_arrays(hospital, split), eager.hospital_arrays(hospital, split)
            assert np.array_equal(a, b) and np.array_equal(la, lb)
    tasks = [ClassificationTask(f, model_factory("small_cnn"), config.train, 64) for f in (lazy, eager)]
    from fedsim.strategies.fedavg import FedAvg

    (first, *_), (second, *_) = (one_round(task, FedAvg(), full_cohort(task)) for task in tasks)
    assert all(np.array_equal(first[name], second[name]) for name in first)
