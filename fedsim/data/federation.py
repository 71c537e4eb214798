"""A dataset cut into hospitals: the data side of an image-classification federation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pyarrow as pa

from fedsim.config import (
    AuthorsShardPartition,
    ConfigError,
    CustomSource,
    DataConfig,
    DirichletEqualPartition,
    DirichletPartition,
    IIDPartition,
    ISIC2018Source,
    MedMNISTSource,
    MessidorSource,
    PathologicalPartition,
    QuantityPartition,
    ShardPartition,
    SyntheticSource,
)
from fedsim.data.arrays import ImageDataset, ImageSet
from fedsim.data.errors import DataError
from fedsim.data.isic import load_isic2018
from fedsim.data.medmnist import load_medmnist
from fedsim.data.messidor import load_messidor
from fedsim.data.fedmrl_shards import partition_authors_shards
from fedsim.data.partition import (
    partition_dirichlet,
    partition_dirichlet_equal,
    partition_iid,
    partition_pathological,
    partition_quantity,
    partition_shards,
    partition_stats,
    split_local_test,
)
from fedsim.data.scanner import apply_scanner, draw_scanner_profiles
from fedsim.data.splits import with_validation
from fedsim.data.synthetic import balanced_labels, draw_images, make_synthetic
from fedsim.seeding import Stream, seed_for

Split = Literal["train", "test"]
_SPLIT_KEY = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Generated:
    """Synthetic training images made where they are used: a hospital's images of each split are
    drawn from (run seed, hospital, split) for its labels, on the worker that trains it, so the
    driver never holds (or ships) the training images of 100,000 hospitals."""

    source: SyntheticSource
    seed: int

    def images(self, hospital: int, split: Split, labels: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed_for(self.seed, Stream.DATASET, 2, hospital, _SPLIT_KEY[split]))
        source = self.source
        return draw_images(labels, source.classes, source.image_size, source.channels, rng)


@dataclass(frozen=True)
class Federation:
    """Which training samples each hospital holds, its own test split, and its scanner profile.

    Hospitals hold index arrays into one shared set of training labels. Real datasets keep their
    images in one shared array, so they go into Ray's object store once and every worker reads them
    without copies; synthetic images are `generated` per hospital instead (the dataset's train
    split then holds no images). The global test set is the dataset's official test split, without
    scanner shift (a neutral reference scanner).
    """

    dataset: ImageDataset
    train_labels: np.ndarray
    train_parts: tuple[np.ndarray, ...]
    test_parts: tuple[np.ndarray, ...]
    scanner_profiles: np.ndarray  # (hospitals, 4); identity rows when there is no feature shift
    seed: int
    generated: Generated | None = None
    #: What hospitals report as labels where it is not the truth (a label-flipping attack); the
    #: images always follow `train_labels`.
    reported_labels: np.ndarray | None = None

    @property
    def num_hospitals(self) -> int:
        return len(self.train_parts)

    def hospital_arrays(self, hospital: int, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """A hospital's images as float32 in [0, 1] (as its scanner sees them) and labels."""
        indices = (self.train_parts if split == "train" else self.test_parts)[hospital]
        labels = self.train_labels[indices]
        stored = self.dataset.train.images[indices] if self.generated is None else self.generated.images(hospital, split, labels)
        images = stored.astype(np.float32) / 255.0
        profile = self.scanner_profiles[hospital]
        if not _is_identity(profile):
            images = apply_scanner(images, profile, seed_for(self.seed, Stream.SCANNER, hospital, _SPLIT_KEY[split]))
        return images, labels if self.reported_labels is None else self.reported_labels[indices]

    def statistics(self) -> pa.Table:
        labels = self.train_labels if self.reported_labels is None else self.reported_labels
        return partition_stats(labels, list(self.train_parts), list(self.test_parts), self.dataset.num_classes)


def _is_identity(profile: np.ndarray) -> bool:
    return bool(profile[0] == 1 and profile[1] == 0 and profile[2] == 0 and profile[3] == 0)


def load_dataset(config: DataConfig, seed: int, given: ImageDataset | None = None) -> ImageDataset:
    """The configured source's splits, with a validation split carved from training where the
    source has none (`data.validation_fraction`, stratified, seeded); `given`: a user's own
    dataset (data.source.kind custom)."""
    dataset = _load_source(config, seed, given)
    return with_validation(dataset, config.validation_fraction, seed_for(seed, Stream.DATASET, 4))


def _load_source(config: DataConfig, seed: int, given: ImageDataset | None) -> ImageDataset:
    source = config.source
    if isinstance(source, CustomSource) or given is not None:
        if given is None:
            raise ConfigError("data.source.kind: custom data is passed in Python, as fedsim.run(config, dataset=...)")
        return given
    if isinstance(source, SyntheticSource):
        def draw(stream: int) -> ImageDataset:
            return make_synthetic(
                num_classes=source.classes,
                train_samples=1,  # the training images are generated per hospital (Generated)
                test_samples=source.test_samples,
                image_size=source.image_size,
                channels=source.channels,
                seed=seed_for(seed, Stream.DATASET, stream),
            )

        main = draw(0)
        validation = draw(1).test  # an independent draw, the size of the test split
        no_images = np.zeros((0, *main.train.images.shape[1:]), dtype=np.uint8)
        return replace(main, train=ImageSet(no_images, np.zeros(0, dtype=np.int64)), val=validation)
    if isinstance(source, MedMNISTSource):
        return load_medmnist(source.path)
    if isinstance(source, ISIC2018Source):
        return load_isic2018(source.root, image_size=source.image_size, seed=seed_for(seed, Stream.DATASET))
    if isinstance(source, MessidorSource):
        return load_messidor(source.root, image_size=source.image_size, seed=seed_for(seed, Stream.DATASET))
    raise ConfigError(f"data.source.kind: unsupported source {source!r}")


def partition_labels(config: DataConfig, labels: np.ndarray, seed: int) -> list[np.ndarray]:
    scheme, hospitals = config.partition, config.hospitals
    partition_seed = seed_for(seed, Stream.PARTITION)
    if isinstance(scheme, IIDPartition):
        return partition_iid(labels, hospitals, partition_seed)
    if isinstance(scheme, DirichletPartition):
        return partition_dirichlet(labels, hospitals, scheme.alpha, scheme.min_samples, partition_seed)
    if isinstance(scheme, DirichletEqualPartition):
        return partition_dirichlet_equal(labels, hospitals, scheme.alpha, partition_seed)
    if isinstance(scheme, PathologicalPartition):
        return partition_pathological(labels, hospitals, scheme.classes_per_hospital, scheme.assignment, partition_seed)
    if isinstance(scheme, ShardPartition):
        return partition_shards(labels, hospitals, scheme.eta, scheme.shards_per_class, partition_seed)
    if isinstance(scheme, AuthorsShardPartition):
        return partition_authors_shards(
            labels, hospitals, scheme.eta, scheme.shards_per_class, scheme.samples_per_shard, partition_seed
        )
    if isinstance(scheme, QuantityPartition):
        return partition_quantity(labels, hospitals, scheme.sigma, scheme.min_samples, partition_seed)
    raise ConfigError(f"data.partition.scheme: unsupported scheme {scheme!r}")


def build_federation(config: DataConfig, seed: int, given: ImageDataset | None = None) -> Federation:
    """Load the source (or take `given`), cut its training split into hospitals and give each a
    local test split."""
    dataset = load_dataset(config, seed, given)
    generated = Generated(config.source, seed) if isinstance(config.source, SyntheticSource) and given is None else None
    labels = dataset.train.labels if generated is None else _synthetic_labels(config.source, seed)
    if not len(labels):  # (a synthetic dataset's train split holds no images: they are Generated)
        raise DataError(f"{dataset.name}: the train split is empty; expected training images")
    if config.hospitals > len(labels):
        raise ConfigError(
            f"data.hospitals: expected at most the {len(labels)} training samples of {dataset.name}, got {config.hospitals}"
        )
    if isinstance(config.partition, AuthorsShardPartition):
        train_parts, test_parts = _overlapping_hospital_splits(config, labels, seed)
    else:
        train_parts, test_parts = [], []
        for hospital, indices in enumerate(partition_labels(config, labels, seed)):
            train, test = split_local_test(
                indices, config.local_test_fraction, seed_for(seed, Stream.PARTITION, 1, hospital)
            )
            train_parts.append(train)
            test_parts.append(test)
    profiles = draw_scanner_profiles(config.hospitals, config.scanner_shift, seed_for(seed, Stream.SCANNER))
    return Federation(dataset, labels, tuple(train_parts), tuple(test_parts), profiles, seed, generated)


def _overlapping_hospital_splits(
    config: DataConfig, labels: np.ndarray, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, test) parts for a partition whose hospitals share samples (authors_shards).

    Cutting each hospital's test split from its own draw would score it on images other
    hospitals train on (at the authors' defaults nearly all of them), so a stratified
    `local_test_fraction` of every class is held out before the draw, no hospital trains on it,
    and it is shared out disjointly, each class in proportion to the hospitals' training counts
    of that class (so a hospital is tested on its own label mix)."""
    held_out = _stratified_hold_out(labels, config.local_test_fraction, seed_for(seed, Stream.PARTITION, 2))
    drawable = np.setdiff1d(np.arange(len(labels)), held_out)
    train_parts = [drawable[part] for part in partition_labels(config, labels[drawable], seed)]
    rng = np.random.default_rng(seed_for(seed, Stream.PARTITION, 3))
    shares: list[list[np.ndarray]] = [[] for _ in train_parts]
    for label in np.unique(labels[held_out]):
        pool = rng.permutation(held_out[labels[held_out] == label])
        counts = np.array([np.count_nonzero(labels[part] == label) for part in train_parts], dtype=np.float64)
        weights = counts if counts.sum() else np.ones(len(train_parts))
        cuts = np.round(np.cumsum(weights)[:-1] / weights.sum() * len(pool)).astype(np.int64)
        for hospital, piece in enumerate(np.split(pool, cuts)):
            shares[hospital].append(piece)
    test_parts = [np.sort(np.concatenate(pieces)) if pieces else np.zeros(0, np.int64) for pieces in shares]
    return train_parts, test_parts


def _stratified_hold_out(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """round(fraction * n_c) seeded samples of every class c, sorted."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(members, round(fraction * len(members)), replace=False)
        for members in (np.flatnonzero(labels == label) for label in np.unique(labels))
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _synthetic_labels(source: SyntheticSource, seed: int) -> np.ndarray:
    """The synthetic training split's labels (its images are Generated per hospital)."""
    return balanced_labels(source.train_samples, source.classes, np.random.default_rng(seed_for(seed, Stream.DATASET, 3)))
