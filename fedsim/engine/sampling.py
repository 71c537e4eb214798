"""Which hospitals train each round, and which worker runs each of them."""

from __future__ import annotations

import heapq

import numpy as np

from fedsim.seeding import Stream, rng_for


def sample_hospitals(run_seed: int, round_index: int, num_hospitals: int, per_round: int) -> np.ndarray:
    """Sorted ids of the hospitals taking part in `round_index` (seeded by run seed and round)."""
    if per_round >= num_hospitals:
        return np.arange(num_hospitals)
    chosen = rng_for(run_seed, Stream.SAMPLING, round_index).choice(num_hospitals, size=per_round, replace=False)
    return np.sort(chosen)


def proportional_hospitals(run_seed: int, round_index: int, sizes: np.ndarray, per_round: int) -> np.ndarray:
    """Sorted ids of `per_round` hospitals drawn without replacement with probabilities
    proportional to their training samples (at most the hospitals that have any)."""
    weights = np.asarray(sizes, dtype=np.float64)
    count = min(per_round, int(np.count_nonzero(weights)))
    chosen = rng_for(run_seed, Stream.SAMPLING, round_index).choice(len(weights), size=count, replace=False, p=weights / weights.sum())
    return np.sort(chosen)


def available_hospitals(run_seed: int, round_index: int, online: np.ndarray, per_round: int) -> np.ndarray:
    """Sorted ids of `per_round` hospitals drawn uniformly among those `online` (all of them when fewer)."""
    candidates = np.flatnonzero(online)
    if per_round >= len(candidates):
        return candidates
    return np.sort(rng_for(run_seed, Stream.SAMPLING, round_index).choice(candidates, size=per_round, replace=False))


def poisson_hospitals(run_seed: int, round_index: int, num_hospitals: int, rate: float) -> np.ndarray:
    """Sorted ids of the hospitals in `round_index` when each takes part independently with
    probability `rate` (the cohort size varies, and may be empty)."""
    if rate >= 1:
        return np.arange(num_hospitals)
    return np.flatnonzero(rng_for(run_seed, Stream.SAMPLING, round_index).random(num_hospitals) < rate)


def balance(costs: np.ndarray, num_workers: int) -> list[list[int]]:
    """Greedy longest-processing-time assignment of items (by cost) to workers.

    Returns, per worker, positions into `costs` in ascending order. Ties break by position and
    worker index, so the plan is deterministic (results never depend on it anyway).
    """
    loads = [(0.0, worker) for worker in range(num_workers)]
    plan: list[list[int]] = [[] for _ in range(num_workers)]
    for position in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        load, worker = heapq.heappop(loads)
        plan[worker].append(position)
        heapq.heappush(loads, (load + float(costs[position]), worker))
    return [sorted(items) for items in plan]


def evaluation_plan(hospitals: list[int], num_units: int, num_workers: int) -> list[tuple[list[int], list[int]]]:
    """Per worker: the hospitals it scores and the global evaluation units it computes (round-robin;
    workers with nothing to do are left out). Any plan gives the same results."""
    plan = [(list(hospitals[w::num_workers]), list(range(num_units))[w::num_workers]) for w in range(num_workers)]
    return [(mine, units) for mine, units in plan if mine or units]
