"""The round protocol (fedsim.engine.rounds) and the driver on the in-process backend (no Ray),
and the two backends against each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedsim.config import load_config
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import RoundSchedule, run_round
from fedsim.pipeline.base import Pipeline
from fedsim.simulation import Simulation
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedmrl import FedMRL
from toy_task import ToyTask, full_cohort

SMALL = [
    "data.source={kind: synthetic, classes: 3, train_samples: 600, test_samples: 150}",
    "data.hospitals=8",
    "train.epochs=1",
]


class _Logged(FedAvg):
    """FedAvg that writes down what the server asked of it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def configure(self, round_index, cohort):
        self.calls.append(("configure", round_index))
        return super().configure(round_index, cohort)

    def aggregate(self, round_index, broadcast, aggregate):
        self.calls.append(("aggregate", round_index))
        return super().aggregate(round_index, broadcast, aggregate)

    def observe(self, round_index, validation):
        self.calls.append(("observe", round_index, dict(validation)))


def _backend(task, strategy, workers: int = 1) -> InProcessBackend:
    return InProcessBackend(task, strategy, Pipeline([]), task.initial_params(0), 3, workers)


def test_a_round_configures_trains_aggregates_evaluates_and_observes_in_that_order() -> None:
    task, strategy = ToyTask(num_hospitals=6), _Logged()
    backend = _backend(task, strategy, workers=2)
    outcome = run_round(backend, task, 1, full_cohort(task, [1, 4]), scored=[0, 4])
    assert [call[:2] for call in strategy.calls] == [("configure", 1), ("aggregate", 1), ("observe", 1)]
    observed = strategy.calls[-1]
    assert set(outcome.global_metrics) == {"accuracy"}  # logged
    assert observed[2] == {}  # the toy task's one global metric is a test score: the strategy sees none
    assert sorted(outcome.hospital_scores) == [0, 4]  # scored for the logs only
    assert [report.hospital for report in outcome.reports] == [1, 4]
    assert outcome.bytes_sent == 2 * sum(a.nbytes for a in task.initial_params(0).values())
    run_round(backend, task, 2, full_cohort(task, [2]), scored=None)
    assert [call[:2] for call in strategy.calls[3:]] == [("configure", 2), ("aggregate", 2)]  # not evaluated: no observe


def test_an_error_anywhere_fails_the_round_with_its_message() -> None:
    class Failing(_Logged):
        def observe(self, round_index, validation):
            raise ValueError("strategy.reward: nothing to learn from")

    task = ToyTask(num_hospitals=3)
    with pytest.raises(ValueError, match="nothing to learn from"):
        run_round(_backend(task, Failing()), task, 1, full_cohort(task), scored=[0])


def test_schedule_follows_sampling_and_evaluation_cadence() -> None:
    config = load_config(None, SMALL + ["rounds=5", "eval.every=2", "sampling.clients_per_round=3", "eval.hospitals=sampled"])
    task = ToyTask(num_hospitals=8)
    schedule = RoundSchedule(config, task)
    cohorts = [schedule.cohort(r) for r in range(1, 6)]
    assert all(len(c.hospitals) == 3 and list(c.sizes) == list(task.hospital_sizes()[c.hospitals]) for c in cohorts)
    assert [schedule.scored(r, c) is not None for r, c in zip(range(1, 6), cohorts)] == [False, True, False, True, True]
    assert schedule.scored(2, cohorts[1]) == cohorts[1].hospitals.tolist()


def test_driver_writes_every_table_without_ray(tmp_path: Path, monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("the in-process backend must not start Ray"))
    config = load_config(None, SMALL + ["rounds=3", "eval.every=2", "engine.backend=in_process", "engine.workers=2"])
    Simulation(config, tmp_path / "run", quiet=True).run()
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1, 2, 3]
    assert np.isnan(rounds["global_accuracy"][0]) and not np.isnan(rounds["global_accuracy"][1])  # every 2nd and the last
    evaluated = pq.read_table(tmp_path / "run" / "hospital_eval.parquet").to_pydict()
    assert sorted(set(evaluated["round"])) == [2, 3] and len(evaluated["round"]) == 2 * 8
    assert len(pq.read_table(tmp_path / "run" / "clients.parquet")) == 3 * 8
    assert (tmp_path / "run" / "model.pt").is_file()


def test_fedmrl_learns_from_every_round_through_the_protocol(tmp_path: Path) -> None:
    config = load_config(None, SMALL + ["rounds=3", "engine.backend=in_process", "strategy=fedmrl"])
    simulation = Simulation(config, tmp_path / "run", quiet=True)
    simulation.run()
    assert isinstance(simulation.strategy, FedMRL)
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pydict()
    assert np.isfinite(rounds["strategy_qmix_td_loss"][-1])  # observe ran (and was awaited) every round


WALL_CLOCK = {"seconds", "strategy_qmix_som_seconds"}


def _assert_same_metrics(one: Path, two: Path, table: str) -> None:
    """Bitwise-equal columns (NaN where the other has NaN), wall-clock columns aside."""
    first, second = (pq.read_table(run / f"{table}.parquet").to_pydict() for run in (one, two))
    assert first.keys() == second.keys(), table
    for column in first.keys() - WALL_CLOCK:
        np.testing.assert_array_equal(np.array(first[column]), np.array(second[column]), err_msg=f"{table}.{column}")


ADAPTIVE_CLIPPING = ["model.name=small_cnn_gn", "privacy={mechanism: central, clip_norm: 0.5, noise_multiplier: 0.5, "
                     "adaptive_clipping: {count_noise: 1.0}}"]


@pytest.mark.parametrize(("strategy", "extra"), [
    ("fedavg", []), ("scaffold", []), ("fedmrl", []),
    ("fedavg", ADAPTIVE_CLIPPING),  # the clip norm travels with the instructions, the clipped count in the sums
    ("fedadam", ["compression={scheme: federated_dropout, fraction: 0.3}"]),
], ids=["fedavg", "scaffold", "fedmrl", "adaptive-clipping", "federated-dropout"])
def test_ray_and_in_process_backends_give_bitwise_identical_metrics(strategy: str, extra: list[str], ray_cluster, tmp_path: Path) -> None:
    overrides = SMALL + ["rounds=3", "sampling.clients_per_round=5", f"strategy={strategy}",
                         "pipeline=[{stage: clip, max_norm: 2.0}]", *extra]
    for backend in ("ray", "in_process"):
        Simulation(load_config(None, overrides + [f"engine.backend={backend}"]), tmp_path / backend, quiet=True).run()
    for table in ("rounds", "clients", "hospital_eval", "partition"):
        _assert_same_metrics(tmp_path / "ray", tmp_path / "in_process", table)
