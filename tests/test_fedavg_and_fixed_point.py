"""FedAvg against a hand-computed weighted average, and the exact (order-free) aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.engine.fixed_point import FixedPointSum
from fedsim.engine.server import ServerCore
from fedsim.engine.worker import WorkerCore
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import HospitalState
from fedsim.strategies.fedavg import FedAvg
from toy_task import ToyTask, full_cohort


def test_fixed_point_sum_is_exact_in_any_grouping() -> None:
    rng = np.random.default_rng(0)
    values = [{"a": rng.normal(scale=10 ** rng.uniform(-4, 2), size=100)} for _ in range(40)]
    one = FixedPointSum()
    for value in values:
        one.add(value)
    groups = [FixedPointSum() for _ in range(3)]
    for index in rng.permutation(len(values)):
        groups[index % 3].add(values[index])
    merged = FixedPointSum()
    for group in reversed(groups):
        merged.merge(group)
    assert np.array_equal(one.value()["a"], merged.value()["a"])
    assert merged.count == len(values)
    np.testing.assert_allclose(one.value()["a"], np.sum([v["a"] for v in values], axis=0), atol=1e-9)


def test_fixed_point_sum_refuses_overflow_instead_of_wrapping() -> None:
    total = FixedPointSum()
    with pytest.raises(OverflowError, match="too large"):
        total.add({"a": np.array([1e7])})
    with pytest.raises(OverflowError, match="NaN"):
        FixedPointSum().add({"a": np.array([np.nan])})


def _round(task: ToyTask, groups: list[list[int]], seed: int = 7) -> dict[str, np.ndarray]:
    """One FedAvg round of all hospitals, with hospitals split over workers as in `groups`."""
    strategy = FedAvg()
    server = ServerCore(strategy, Pipeline([]), task.initial_params(0))
    instructions = server.configure(1, full_cohort(task))
    partials, all_reports = [], []
    for group in groups:
        worker = WorkerCore(task, strategy, Pipeline([]), use_gpu=False, threads=1)
        jobs = [instructions[h] for h in group]
        partial, reports, *states = worker.train(1, seed, server.broadcast, jobs, *[None] * len(jobs))
        assert [r.hospital for r in reports] == group and states == [HospitalState(1, None, ())] * len(group)
        partials.append(partial)
        all_reports += reports
    params, *_ = server.aggregate(1, instructions, all_reports, *partials)
    return params


def test_fedavg_equals_hand_computed_weighted_average() -> None:
    task = ToyTask()
    params = _round(task, [[0, 1, 2], [3, 4, 5]])
    sizes = task.hospital_sizes().astype(np.float64)
    from fedsim.seeding import Stream, seed_for

    local = [task.local_update(h, np.zeros(5, np.float32), seed_for(7, Stream.LOCAL_TRAINING, 1, h)) for h in range(6)]
    expected = sum(n * w.astype(np.float64) for n, w in zip(sizes, local)) / sizes.sum()
    np.testing.assert_allclose(params["w"], expected, rtol=0, atol=1e-6)
    assert params["w"].dtype == np.float32
    assert params["count"] == 0  # integer buffers keep the global value


def test_fedavg_result_is_bitwise_independent_of_worker_grouping() -> None:
    task = ToyTask()
    reference = _round(task, [[0, 1, 2, 3, 4, 5]])
    for groups in ([[0, 2, 4], [1, 3, 5]], [[5], [0, 1], [2, 3, 4]]):
        assert np.array_equal(_round(task, groups)["w"], reference["w"])
