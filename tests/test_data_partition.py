"""Partitioners: exact cover, reproducibility, and the skew each scheme promises."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.data import (
    DataError,
    home_hospitals,
    partition_authors_shards,
    partition_dirichlet,
    partition_dirichlet_equal,
    partition_iid,
    partition_pathological,
    partition_quantity,
    partition_shards,
    partition_stats,
    split_local_test,
)

NUM_CLASSES = 10
LABELS = np.random.default_rng(123).integers(0, NUM_CLASSES, size=5000)

SCHEMES = {
    "iid": lambda labels, seed: partition_iid(labels, 8, seed),
    "dirichlet": lambda labels, seed: partition_dirichlet(labels, 8, 0.3, 10, seed),
    "dirichlet_equal": lambda labels, seed: partition_dirichlet_equal(labels, 8, 0.3, seed),
    "pathological": lambda labels, seed: partition_pathological(labels, 8, 3, "first-deterministic", seed),
    "shards": lambda labels, seed: partition_shards(labels, 8, 0.7, 20, seed),
    "quantity": lambda labels, seed: partition_quantity(labels, 8, 1.0, 10, seed),
}


def label_distributions(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    counts = np.stack([np.bincount(labels[part], minlength=NUM_CLASSES) for part in parts])
    return counts / counts.sum(axis=1, keepdims=True)


def mean_tv_from_global(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    global_dist = np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    return float(0.5 * np.abs(label_distributions(labels, parts) - global_dist).sum(axis=1).mean())


def at_home_fraction(labels: np.ndarray, parts: list[np.ndarray], num_hospitals: int) -> float:
    """Share of samples placed at a home hospital of their class."""
    is_home = np.zeros((NUM_CLASSES, num_hospitals), dtype=bool)
    for label in range(NUM_CLASSES):
        is_home[label, home_hospitals(label, NUM_CLASSES, num_hospitals)] = True
    hospital_of = np.empty(len(labels), dtype=np.int64)
    for hospital, part in enumerate(parts):
        hospital_of[part] = hospital
    return float(is_home[labels, hospital_of].mean())


COVERING = [scheme for scheme in SCHEMES if scheme != "pathological"]  # it may leave classes out


@pytest.mark.parametrize("scheme", COVERING)
def test_parts_are_sorted_disjoint_exact_cover(scheme: str) -> None:
    parts = SCHEMES[scheme](LABELS, 0)
    assert len(parts) == 8
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_same_parts_other_seed_other_parts(scheme: str) -> None:
    first, again, other = (SCHEMES[scheme](LABELS, seed) for seed in (5, 5, 6))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_iid_sizes_differ_by_at_most_one() -> None:
    sizes = [len(part) for part in partition_iid(LABELS, 7, 0)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_large_alpha_is_near_iid_and_small_alpha_is_skewed() -> None:
    near_iid = partition_dirichlet(LABELS, 10, alpha=1000.0, min_samples=1, seed=0)
    skewed = partition_dirichlet(LABELS, 10, alpha=0.05, min_samples=1, seed=0)
    assert mean_tv_from_global(LABELS, near_iid) < 0.1
    assert mean_tv_from_global(LABELS, skewed) > 0.5


def test_dirichlet_honours_min_samples() -> None:
    parts = partition_dirichlet(LABELS, 20, alpha=0.1, min_samples=50, seed=3)
    assert min(len(part) for part in parts) >= 50


def test_dirichlet_impossible_min_samples_raises() -> None:
    with pytest.raises(DataError, match="min_samples"):
        partition_dirichlet(LABELS, 10, alpha=0.5, min_samples=501, seed=0)
    # Feasible in count, but Dir(0.05) essentially never gives ten near-equal hospitals.
    with pytest.raises(DataError, match="lower min_samples or raise alpha"):
        partition_dirichlet(LABELS[:100], 10, alpha=0.05, min_samples=10, seed=0)


def test_home_hospitals_follow_documented_rule() -> None:
    assert home_hospitals(3, num_classes=4, num_hospitals=10).tolist() == [3, 7]
    assert home_hospitals(7, num_classes=10, num_hospitals=4).tolist() == [3]


@pytest.mark.parametrize("num_hospitals", [4, 10, 25])
def test_shards_eta_one_keeps_only_home_classes(num_hospitals: int) -> None:
    parts = partition_shards(LABELS, num_hospitals, eta=1.0, shards_per_class=10, seed=0)
    for hospital, part in enumerate(parts):
        home_classes = [c for c in range(NUM_CLASSES) if hospital in home_hospitals(c, NUM_CLASSES, num_hospitals)]
        assert set(np.unique(LABELS[part])) <= set(home_classes)
    assert at_home_fraction(LABELS, parts, num_hospitals) == 1.0


def test_shards_eta_zero_sends_nothing_home() -> None:
    parts = partition_shards(LABELS, 10, eta=0.0, shards_per_class=20, seed=0)
    assert at_home_fraction(LABELS, parts, 10) == 0.0


def test_shards_intermediate_eta_sends_that_fraction_home() -> None:
    fractions = [
        at_home_fraction(LABELS, partition_shards(LABELS, 10, eta=0.6, shards_per_class=50, seed=seed), 10)
        for seed in range(3)
    ]
    assert abs(np.mean(fractions) - 0.6) < 0.05


def test_shards_empty_hospital_raises_with_advice() -> None:
    with pytest.raises(DataError, match="shards_per_class"):
        partition_shards(LABELS, 30, eta=1.0, shards_per_class=2, seed=0)


def test_quantity_sizes_sum_to_n_and_spread_with_sigma() -> None:
    def size_cv(sigma: float) -> float:
        sizes = np.array([len(p) for p in partition_quantity(LABELS, 20, sigma, min_samples=5, seed=1)])
        assert sizes.sum() == len(LABELS) and sizes.min() >= 5
        return float(sizes.std() / sizes.mean())

    assert size_cv(0.0) < 0.01
    assert size_cv(0.3) < size_cv(1.5)


def test_quantity_min_samples_honoured_under_heavy_skew() -> None:
    parts = partition_quantity(LABELS, 50, sigma=3.0, min_samples=40, seed=0)
    assert min(len(part) for part in parts) >= 40


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: partition_iid(LABELS, 0, 0), "num_hospitals"),
        (lambda: partition_iid(LABELS[:5], 6, 0), "num_hospitals"),
        (lambda: partition_iid(np.array([0.5, 1.0]), 1, 0), "labels"),
        (lambda: partition_dirichlet(LABELS, 4, 0.0, 1, 0), "alpha"),
        (lambda: partition_dirichlet(LABELS, 4, 1.0, 0, 0), "min_samples"),
        (lambda: partition_shards(LABELS, 4, 1.5, 10, 0), "eta"),
        (lambda: partition_shards(LABELS, 4, 0.5, 0, 0), "shards_per_class"),
        (lambda: partition_shards(LABELS, 1, 0.5, 10, 0), "eta"),
        (lambda: partition_quantity(LABELS, 4, -1.0, 1, 0), "sigma"),
        (lambda: partition_quantity(LABELS, 4, 1.0, 2000, 0), "min_samples"),
        (lambda: partition_dirichlet_equal(LABELS, 4, 0.0, 0), "alpha"),
        (lambda: partition_pathological(LABELS, 4, 11, "random", 0), "classes_per_hospital"),
        (lambda: partition_pathological(LABELS, 4, 2, "sorted", 0), "assignment"),
        (lambda: partition_pathological(np.array([0, 1, 1, 1]), 3, 1, "deterministic", 0), "classes_per_hospital"),
        (lambda: partition_authors_shards(LABELS, 4, 1.5, 10, 5, 0), "eta"),
        (lambda: partition_authors_shards(LABELS, 4, 1.0, 0, 5, 0), "shards_per_class"),
        (lambda: partition_authors_shards(LABELS, 4, 1.0, 10, 10**6, 0), "samples_per_shard"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(call, parameter: str) -> None:
    with pytest.raises(DataError, match=parameter):
        call()


def test_split_local_test_properties() -> None:
    indices = np.arange(100, 200, 2)
    train, test = split_local_test(indices, 0.2, seed=0)
    assert len(test) == 10 and len(train) == 40
    assert np.array_equal(np.sort(np.concatenate([train, test])), indices)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    again = split_local_test(indices, 0.2, seed=0)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(split_local_test(indices, 0.2, seed=1)[1], test)


def test_split_local_test_small_hospitals() -> None:
    assert [len(a) for a in split_local_test(np.array([4, 9]), 0.01, 0)] == [1, 1]
    assert [len(a) for a in split_local_test(np.array([4, 9, 11]), 0.9, 0)] == [1, 2]
    assert [len(a) for a in split_local_test(np.array([7]), 0.5, 0)] == [1, 0]
    assert [len(a) for a in split_local_test(np.arange(10), 0.0, 0)] == [10, 0]
    with pytest.raises(DataError, match="fraction"):
        split_local_test(np.arange(10), 1.0, 0)
    with pytest.raises(DataError, match="indices"):
        split_local_test(np.array([], dtype=np.int64), 0.2, 0)


def test_partition_stats_counts_match() -> None:
    parts = partition_dirichlet(LABELS, 5, 0.5, 10, seed=0)
    splits = [split_local_test(part, 0.25, seed=i) for i, part in enumerate(parts)]
    table = partition_stats(LABELS, [tr for tr, _ in splits], [te for _, te in splits], NUM_CLASSES)
    class_columns = [f"class_{c}" for c in range(NUM_CLASSES)]
    assert table.column_names == ["hospital", "train_samples", "test_samples", *class_columns]
    assert str(table.schema.field("hospital").type) == "int32"
    assert str(table.schema.field("class_0").type) == "int64"
    assert table["hospital"].to_pylist() == list(range(5))
    assert table["train_samples"].to_pylist() == [len(tr) for tr, _ in splits]
    assert table["test_samples"].to_pylist() == [len(te) for _, te in splits]
    for hospital, (train, _) in enumerate(splits):
        row = [table[f"class_{c}"][hospital].as_py() for c in range(NUM_CLASSES)]
        assert row == np.bincount(LABELS[train], minlength=NUM_CLASSES).tolist()
    with pytest.raises(DataError, match="test_parts"):
        partition_stats(LABELS, [parts[0]], [], NUM_CLASSES)


# ----- Hsu et al. 2019: Dirichlet at equal sizes ------------------------------------------------
def test_dirichlet_equal_sizes_are_equal_and_skew_follows_alpha() -> None:
    skewed, near_iid = (partition_dirichlet_equal(LABELS, 8, alpha, seed=1) for alpha in (0.1, 1000.0))
    for parts in (skewed, near_iid):
        assert max(map(len, parts)) - min(map(len, parts)) <= 1 and sum(map(len, parts)) == len(LABELS)
    assert mean_tv_from_global(LABELS, skewed) > 0.4 > 0.1 > mean_tv_from_global(LABELS, near_iid)


def test_dirichlet_equal_first_hospital_filled_follows_its_draw() -> None:
    """The first hospital filled sees every class available: its counts are Multinomial(N/H, q)."""
    labels = np.repeat(np.arange(2), [3000, 3000])
    parts = partition_dirichlet_equal(labels, 2, 1.0, seed=4)
    rng = np.random.default_rng(4)  # replay the documented draws: shuffle classes, order, q
    for c in range(2):
        rng.permutation(3000)
    first = int(rng.permutation(2)[0])
    q = rng.dirichlet(1.0 * np.array([0.5, 0.5]))
    expected = rng.multinomial(3000, q)
    np.testing.assert_array_equal(np.bincount(labels[parts[first]], minlength=2), expected)


# ----- pathological (flwr-datasets' PathologicalPartitioner) -------------------------------------
@pytest.mark.parametrize("assignment", ["random", "deterministic", "first-deterministic"])
def test_pathological_gives_each_hospital_exactly_k_classes(assignment: str) -> None:
    parts = partition_pathological(LABELS, 8, 3, assignment, seed=2)
    held = [set(np.unique(LABELS[part]).tolist()) for part in parts]
    assert all(len(classes) == 3 for classes in held)
    used = np.concatenate(parts)
    assert len(np.unique(used)) == len(used)  # disjoint
    covered = set().union(*held)
    np.testing.assert_array_equal(np.sort(used), np.flatnonzero(np.isin(LABELS, sorted(covered))))  # held classes whole
    for c in covered:  # a class is split near-equally over the hospitals holding it
        counts = [int(np.sum(LABELS[part] == c)) for part, classes in zip(parts, held) if c in classes]
        assert max(counts) - min(counts) <= 1
    if assignment == "deterministic":
        assert held == [{h % 10, (h + 1) % 10, (h + 2) % 10} for h in range(8)]
    if assignment == "first-deterministic":
        assert all(h % 10 in classes for h, classes in enumerate(held))


def test_pathological_is_deterministic_in_its_seed() -> None:
    first, again, other = (partition_pathological(LABELS, 8, 2, "random", seed) for seed in (3, 3, 4))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


# ----- the FedMRL authors' shard sampling ---------------------------------------------------------
def test_authors_shards_every_hospital_draws_every_class_and_hospitals_overlap() -> None:
    labels = np.repeat(np.arange(3), [400, 200, 50])
    parts = partition_authors_shards(labels, 4, eta=1.0, shards_per_class=20, samples_per_shard=5, seed=0)
    for part in parts:
        assert np.all(np.diff(part) > 0)
        counts = np.bincount(labels[part], minlength=3)
        assert np.all(counts > 0) and np.all(counts <= [100, 100, 50])  # <= 20 shards x 5 distinct draws
        assert counts[2] > 40  # 20 shards x 5 of 50 samples: nearly all of the small class
    assert len(np.intersect1d(parts[0], parts[1])) > 0  # copies: samples shared between hospitals
    again = partition_authors_shards(labels, 4, eta=1.0, shards_per_class=20, samples_per_shard=5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_authors_shards_eta_only_thins_the_draws() -> None:
    """Both branches draw the same class; eta < 1 samples with replacement, so fewer distinct."""
    labels = np.repeat(np.arange(2), [5000, 5000])
    full, thinned = (partition_authors_shards(labels, 2, eta, 200, 5, seed=1) for eta in (1.0, 0.0))
    assert all(len(t) < len(f) for f, t in zip(full, thinned))
    for part in full + thinned:
        counts = np.bincount(labels[part], minlength=2)
        assert abs(counts[0] - counts[1]) < 0.1 * counts.sum()  # no label skew either way
