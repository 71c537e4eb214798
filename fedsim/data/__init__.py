"""Data layer: datasets as validated numpy arrays, hospital partitions and scanner shift."""

from fedsim.data.arrays import ImageDataset, ImageSet
from fedsim.data.errors import DataError
from fedsim.data.isic import load_isic2018
from fedsim.data.medmnist import load_medmnist
from fedsim.data.messidor import load_messidor
from fedsim.data.fedmrl_shards import partition_authors_shards
from fedsim.data.partition import (
    home_hospitals,
    partition_dirichlet,
    partition_dirichlet_equal,
    partition_iid,
    partition_pathological,
    partition_quantity,
    partition_shards,
    partition_stats,
    split_local_test,
)
from fedsim.data.scanner import IDENTITY_PROFILE, apply_scanner, draw_scanner_profiles
from fedsim.data.synthetic import make_synthetic

__all__ = [
    "IDENTITY_PROFILE",
    "DataError",
    "ImageDataset",
    "ImageSet",
    "apply_scanner",
    "draw_scanner_profiles",
    "home_hospitals",
    "load_isic2018",
    "load_medmnist",
    "load_messidor",
    "make_synthetic",
    "partition_authors_shards",
    "partition_dirichlet",
    "partition_dirichlet_equal",
    "partition_iid",
    "partition_pathological",
    "partition_quantity",
    "partition_shards",
    "partition_stats",
    "split_local_test",
]
