"""Split one dataset's sample indices across simulated hospitals.

Every partitioner returns ``num_hospitals`` sorted int64 index arrays into ``labels`` that are
pairwise disjoint and together cover every index exactly once (except where its docstring says
otherwise: the pathological split leaves out classes no hospital holds), and depends only on
``seed``. Each scheme models one kind of real-world heterogeneity: label skew (per-class
Dirichlet, Hsu's equal-size Dirichlet, pathological k classes, shards), quantity skew
(log-normal sizes), or none (IID) as the control. The FedMRL authors' own shard sampling, which
copies samples (hospitals overlap), lives in fedsim.data.fedmrl_shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

from fedsim.data.errors import DataError

_DIRICHLET_TRIES = 1000


def partition_iid(labels: np.ndarray, num_hospitals: int, seed: int) -> list[np.ndarray]:
    """Uniformly random parts whose sizes differ by at most one."""
    labels = _check_labels(labels, num_hospitals)
    order = np.random.default_rng(seed).permutation(len(labels))
    return _sorted_parts(np.array_split(order, num_hospitals))


def partition_dirichlet(
    labels: np.ndarray, num_hospitals: int, alpha: float, min_samples: int, seed: int
) -> list[np.ndarray]:
    """Label skew: each class is spread over hospitals with proportions drawn from Dir(alpha).

    This is the per-class scheme of Yurochkin et al. 2019 (as flwr-datasets'
    DirichletPartitioner): for each class c, p_c ~ Dir(alpha * 1_H) and class c's samples are cut
    by p_c, so hospital sizes vary too. Small alpha concentrates a class on few hospitals; large
    alpha approaches IID. Whole draws are repeated (up to a bounded number of tries) until every
    hospital has >= min_samples. For equal hospital sizes see `partition_dirichlet_equal`.
    """
    labels = _check_labels(labels, num_hospitals)
    if not alpha > 0:
        raise DataError(f"alpha: expected > 0, got {alpha}")
    _check_min_samples(min_samples, num_hospitals, len(labels))
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(_DIRICHLET_TRIES):
        buckets: list[list[np.ndarray]] = [[] for _ in range(num_hospitals)]
        for members in by_class:
            members = rng.permutation(members)
            proportions = rng.dirichlet(np.full(num_hospitals, float(alpha)))
            cuts = np.round(np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
            for hospital, chunk in enumerate(np.split(members, cuts)):
                buckets[hospital].append(chunk)
        parts = [np.concatenate(chunks) for chunks in buckets]
        if min(len(part) for part in parts) >= min_samples:
            return _sorted_parts(parts)
    raise DataError(
        f"partition_dirichlet: no draw in {_DIRICHLET_TRIES} tries gave every hospital >= {min_samples} "
        f"samples (alpha={alpha}, num_hospitals={num_hospitals}); lower min_samples or raise alpha"
    )


def partition_dirichlet_equal(labels: np.ndarray, num_hospitals: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label skew at equal sizes (Hsu et al. 2019, "Measuring the effects of non-identical data
    distribution"): hospital h's class proportions are q_h ~ Dir(alpha * p), p the dataset's
    class shares, and every hospital holds N/H samples (sizes differ by at most one).

    Hospitals are filled one after another in a seeded random order, drawing their N/H samples
    without replacement: counts ~ Multinomial(still needed, q_h over the classes not yet used up,
    renormalised), capped by what is left of each class, until the hospital is full. So the last
    hospitals filled follow q_h less closely when a class runs out (Hsu et al. do not say what to
    do then); the split is an exact cover by construction.
    """
    labels = _check_labels(labels, num_hospitals)
    if not alpha > 0:
        raise DataError(f"alpha: expected > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    remaining = np.array([len(pool) for pool in pools], dtype=np.int64)
    prior = remaining / remaining.sum()
    sizes = [len(chunk) for chunk in np.array_split(np.arange(len(labels)), num_hospitals)]
    parts: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * num_hospitals
    for hospital in rng.permutation(num_hospitals):
        shares = rng.dirichlet(alpha * prior)
        need, chunks = sizes[hospital], []
        while need > 0:
            weights = np.where(remaining > 0, shares, 0.0)
            weights = weights if weights.sum() > 0 else remaining.astype(np.float64)
            counts = np.minimum(rng.multinomial(need, weights / weights.sum()), remaining)
            for c, count in enumerate(counts):
                chunks.append(np.array(pools[c][:count], dtype=np.int64))
                del pools[c][:count]
            remaining -= counts
            need -= int(counts.sum())
        parts[hospital] = np.concatenate(chunks)
    return _sorted_parts(parts)


PathologicalAssignment = Literal["random", "deterministic", "first-deterministic"]


def partition_pathological(
    labels: np.ndarray, num_hospitals: int, classes_per_hospital: int, assignment: PathologicalAssignment, seed: int
) -> list[np.ndarray]:
    """Pathological label skew: each hospital holds exactly `classes_per_hospital` classes (as
    flwr-datasets' PathologicalPartitioner, McMahan et al. 2017's 2-class split for k = 2).

    Which classes (C classes, hospital h, k per hospital):
    - "first-deterministic" (default): class h mod C, then k - 1 others drawn at random;
    - "deterministic": classes h, h+1, ..., h+k-1 (mod C);
    - "random": k classes drawn at random.
    Each class's samples are then shuffled and cut into near-equal parts (``np.array_split``), one
    per hospital holding it. Samples of a class no hospital holds are left out (possible with
    "random", or H * k < C), as flwr-datasets does; a hospital left empty raises DataError.
    """
    labels = _check_labels(labels, num_hospitals)
    classes = np.unique(labels)
    if not 1 <= classes_per_hospital <= len(classes):
        raise DataError(f"classes_per_hospital: expected 1..{len(classes)} (the classes present), got {classes_per_hospital}")
    rng = np.random.default_rng(seed)
    num_classes = len(classes)
    held: list[np.ndarray] = []
    for hospital in range(num_hospitals):
        if assignment == "deterministic":
            chosen = (hospital + np.arange(classes_per_hospital)) % num_classes
        elif assignment == "first-deterministic":
            first = hospital % num_classes
            others = rng.choice(np.delete(np.arange(num_classes), first), classes_per_hospital - 1, replace=False)
            chosen = np.concatenate([[first], others])
        elif assignment == "random":
            chosen = rng.choice(num_classes, classes_per_hospital, replace=False)
        else:
            raise DataError(f"assignment: expected random, deterministic or first-deterministic, got {assignment!r}")
        held.append(np.sort(chosen))
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_hospitals)]
    for c, label in enumerate(classes):
        holders = [h for h in range(num_hospitals) if c in held[h]]
        members = rng.permutation(np.flatnonzero(labels == label))
        for hospital, chunk in zip(holders, np.array_split(members, max(1, len(holders)))):
            buckets[hospital].append(chunk)
    empty = [hospital for hospital, chunks in enumerate(buckets) if not sum(len(chunk) for chunk in chunks)]
    if empty:
        raise DataError(
            f"partition_pathological: hospitals {empty} received no sample (more hospitals share a class "
            f"than it has samples); raise classes_per_hospital (now {classes_per_hospital}) or lower num_hospitals"
        )
    return _sorted_parts([np.concatenate(chunks) for chunks in buckets])


def home_hospitals(label: int, num_classes: int, num_hospitals: int) -> np.ndarray:
    """Hospitals that are "home" of a class in partition_shards: h == label (mod min(H, C))."""
    period = min(num_classes, num_hospitals)
    return np.arange(label % period, num_hospitals, period, dtype=np.int64)


def partition_shards(
    labels: np.ndarray, num_hospitals: int, eta: float, shards_per_class: int, seed: int
) -> list[np.ndarray]:
    """FedMRL-style label skew: shards of each class go to the class's home hospitals w.p. eta.

    Rule, with C = max(labels) + 1 classes and H hospitals:
    - Homes: hospital h is a home of class c iff h == c (mod min(H, C)). So with H >= C
      hospital h is home of class h mod C; with H < C hospital h is home of every class
      c with c mod H == h.
    - Each class's samples are shuffled and cut into ``shards_per_class`` near-equal shards
      (``np.array_split``; empty shards of classes with fewer samples are dropped).
    - Classes in increasing order, shards in order, each shard independently: with probability
      eta it goes to the home of that class holding the fewest shards so far (ties broken at
      random), otherwise to a hospital drawn uniformly from the class's non-home hospitals.
    eta=1 gives each hospital only its home classes; eta=0 sends no shard home. All randomness
    comes from ``seed``. A hospital left without any sample raises DataError.

    This is fedsim's reading of the paper's description; it is not what the authors' code does
    (there every hospital draws shards of every class, and eta only decides how a shard is
    sampled): that variant is `fedsim.data.fedmrl_shards.partition_authors_shards`
    (``scheme: authors_shards``).
    """
    labels = _check_labels(labels, num_hospitals)
    if not 0 <= eta <= 1:
        raise DataError(f"eta: expected a probability in [0, 1], got {eta}")
    if shards_per_class < 1:
        raise DataError(f"shards_per_class: expected >= 1, got {shards_per_class}")
    num_classes = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_hospitals)]
    shard_counts = np.zeros(num_hospitals, dtype=np.int64)
    for label in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == label))
        homes = home_hospitals(label, num_classes, num_hospitals)
        strangers = np.setdiff1d(np.arange(num_hospitals), homes)
        if eta < 1 and not len(strangers):
            raise DataError(
                f"eta: class {label} has no non-home hospital ({num_hospitals} hospitals, "
                f"{num_classes} classes), so eta < 1 is impossible; use eta=1 or more hospitals and classes"
            )
        for shard in np.array_split(members, shards_per_class):
            if not len(shard):
                continue
            if rng.random() < eta:
                least = homes[shard_counts[homes] == shard_counts[homes].min()]
                hospital = rng.choice(least)
            else:
                hospital = rng.choice(strangers)
            buckets[hospital].append(shard)
            shard_counts[hospital] += 1
    empty = [hospital for hospital, chunks in enumerate(buckets) if not chunks]
    if empty:
        raise DataError(
            f"partition_shards: hospitals {empty} received no shard; raise shards_per_class "
            f"(now {shards_per_class}) or lower num_hospitals (now {num_hospitals})"
        )
    return _sorted_parts([np.concatenate(chunks) for chunks in buckets])


def partition_quantity(
    labels: np.ndarray, num_hospitals: int, sigma: float, min_samples: int, seed: int
) -> list[np.ndarray]:
    """Quantity skew: log-normal(0, sigma) hospital sizes, labels IID within each hospital.

    Every hospital first gets ``min_samples``; the rest is shared in proportion to the
    log-normal weights, rounded by largest remainder so sizes are integers summing to N.
    """
    labels = _check_labels(labels, num_hospitals)
    if not sigma >= 0:
        raise DataError(f"sigma: expected >= 0, got {sigma}")
    _check_min_samples(min_samples, num_hospitals, len(labels))
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, sigma, size=num_hospitals)
    spare = len(labels) - min_samples * num_hospitals
    share = weights / weights.sum() * spare
    sizes = np.floor(share).astype(np.int64)
    largest_remainders = np.argsort(sizes - share, kind="stable")[: spare - sizes.sum()]
    sizes[largest_remainders] += 1
    sizes += min_samples
    order = rng.permutation(len(labels))
    return _sorted_parts(np.split(order, np.cumsum(sizes)[:-1]))


def split_local_test(indices: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A hospital's own (train, test) split of its indices, both sorted.

    The test share is round(fraction * n), but at least 1 when fraction > 0 and n >= 2, and
    always leaving at least 1 training sample, so tiny hospitals still train and evaluate.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or not len(indices):
        raise DataError(f"indices: expected a non-empty 1-D index array, got shape {indices.shape}")
    if not 0 <= fraction < 1:
        raise DataError(f"fraction: expected a value in [0, 1), got {fraction}")
    n = len(indices)
    num_test = round(fraction * n)
    if fraction > 0 and n >= 2:
        num_test = max(num_test, 1)
    num_test = min(num_test, n - 1)
    shuffled = np.random.default_rng(seed).permutation(indices)
    return np.sort(shuffled[num_test:]), np.sort(shuffled[:num_test])


def partition_stats(
    labels: np.ndarray,
    train_parts: Sequence[np.ndarray],
    test_parts: Sequence[np.ndarray],
    num_classes: int,
) -> pa.Table:
    """Per-hospital sizes and train class counts, for logging how skewed a federation is."""
    labels = np.asarray(labels)
    if len(train_parts) != len(test_parts):
        raise DataError(f"test_parts: expected {len(train_parts)} parts like train_parts, got {len(test_parts)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels: expected values in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    counts = np.array(
        [np.bincount(labels[part], minlength=num_classes) for part in train_parts], dtype=np.int64
    ).reshape(len(train_parts), num_classes)
    columns = {
        "hospital": pa.array(np.arange(len(train_parts)), pa.int32()),
        "train_samples": pa.array([len(part) for part in train_parts], pa.int64()),
        "test_samples": pa.array([len(part) for part in test_parts], pa.int64()),
    }
    for label in range(num_classes):
        columns[f"class_{label}"] = pa.array(counts[:, label], pa.int64())
    return pa.table(columns)


def _check_labels(labels: np.ndarray, num_hospitals: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or not len(labels):
        raise DataError(f"labels: expected a non-empty 1-D integer array, got {labels.dtype} shape {labels.shape}")
    if labels.min() < 0:
        raise DataError(f"labels: expected non-negative class ids, got minimum {labels.min()}")
    if not 1 <= num_hospitals <= len(labels):
        raise DataError(f"num_hospitals: expected 1..{len(labels)} (the number of samples), got {num_hospitals}")
    return labels


def _check_min_samples(min_samples: int, num_hospitals: int, num_samples: int) -> None:
    if min_samples < 1:
        raise DataError(f"min_samples: expected >= 1 (a hospital needs data), got {min_samples}")
    if min_samples * num_hospitals > num_samples:
        raise DataError(
            f"min_samples: {min_samples} per hospital x {num_hospitals} hospitals exceeds the "
            f"{num_samples} samples; lower min_samples or num_hospitals"
        )


def _sorted_parts(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(part).astype(np.int64) for part in parts]
