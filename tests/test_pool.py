"""The worker pool on a real local Ray cluster, driven with the numpy toy task."""

from __future__ import annotations

import numpy as np

from fedsim.engine.pool import WorkerPool
from fedsim.engine.sampling import balance, sample_hospitals
from fedsim.engine.server import ServerCore
from fedsim.pipeline.base import Pipeline
from fedsim.strategies.fedavg import FedAvg
from toy_task import ToyTask, full_cohort


def _run(ray, workers: int, rounds: int, per_round: int) -> tuple[list[np.ndarray], dict[int, int], dict]:
    task = ToyTask(num_hospitals=8)
    strategy = FedAvg()
    pool = WorkerPool(ray.put(task), strategy, Pipeline([]), workers, num_cpus=0.5, num_gpus=0, keeps_hospital_state=True)
    server = ray.remote(ServerCore).options(num_cpus=0).remote(strategy, Pipeline([]), task.initial_params(0))
    global_ref = ray.put(task.initial_params(0))
    history, sampled_counts = [], {h: 0 for h in range(8)}
    try:
        for r in range(1, rounds + 1):
            sampled = sample_hospitals(3, r, 8, per_round)
            for h in sampled:
                sampled_counts[int(h)] += 1
            cohort = full_cohort(task, sampled.tolist())
            instructions = ray.get(server.configure.remote(r, cohort))
            partials, reports = pool.train(r, 3, global_ref, instructions, cohort.sizes)
            assert [rep.metrics["times_trained"] for rep in reports] == [sampled_counts[rep.hospital] for rep in reports]
            global_ref, _, _, _ = server.aggregate.options(num_returns=4).remote(r, instructions, reports, *partials)
            history.append(ray.get(global_ref)["w"].copy())
        per_hospital, outputs = pool.evaluate(global_ref, list(range(8)), task.global_eval_units())
    finally:
        pool.shutdown()
    return history, sampled_counts, {"per_hospital": per_hospital, "outputs": outputs}


def test_hospital_state_survives_rounds_whichever_worker_runs_it(ray_cluster) -> None:
    history, counts, evaluation = _run(ray_cluster, workers=3, rounds=5, per_round=4)
    assert sorted(evaluation["per_hospital"]) == list(range(8))
    for hospital, scores in evaluation["per_hospital"].items():
        assert scores["times_trained"] == counts[hospital]
    assert len(evaluation["outputs"]) == 3


def test_pool_results_identical_for_one_and_three_workers(ray_cluster) -> None:
    one, _, eval_one = _run(ray_cluster, workers=1, rounds=3, per_round=5)
    three, _, eval_three = _run(ray_cluster, workers=3, rounds=3, per_round=5)
    for a, b in zip(one, three):
        assert np.array_equal(a, b)
    assert eval_one["outputs"] == eval_three["outputs"]


def test_sampling_is_seeded_and_sized() -> None:
    a = sample_hospitals(0, 1, 100, 10)
    assert len(a) == 10 and len(set(a.tolist())) == 10 and list(a) == sorted(a)
    assert np.array_equal(a, sample_hospitals(0, 1, 100, 10))
    assert not np.array_equal(a, sample_hospitals(0, 2, 100, 10))
    assert np.array_equal(sample_hospitals(0, 1, 5, 5), np.arange(5))


def test_balance_covers_items_and_evens_load() -> None:
    costs = np.array([10, 1, 1, 1, 9, 2, 3, 8])
    plan = balance(costs, 3)
    assert sorted(i for worker in plan for i in worker) == list(range(8))
    loads = [costs[worker].sum() for worker in plan]
    assert max(loads) - min(loads) <= costs.max()
