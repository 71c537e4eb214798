"""Asynchronous aggregation (FedBuff, FedAsync) on the simulated clock: the papers' staleness
rules, FedBuff's reduction to FedAvg, staleness logged per update, determinism over workers and
through resume, and the settings it refuses."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedsim.config import load_config
from fedsim.engine.asynchronous import AsynchronousRun
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import RoundSchedule, run_round
from fedsim.errors import ConfigError
from fedsim.pipeline.base import Pipeline
from fedsim.report import render_report
from fedsim.simulation import Simulation
from fedsim.strategies.asynchronous import Arrival, StalenessConfig
from fedsim.strategies.fedasync import FedAsync
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedbuff import FedBuff
from test_faults import SCHEDULING, assert_same_run, interrupted_in_round
from test_systems import SMALL
from toy_task import ToyTask

POLYNOMIAL = StalenessConfig(kind="polynomial", exponent=0.5)


def _one_tier(samples_per_second: float = 30.0, dropout: float = 0.0) -> str:
    """A systems section of identical hospitals with links so fast that only compute counts."""
    return (f"systems={{tiers: [{{name: same, share: 1, samples_per_second: {samples_per_second}, uplink: 1e30, "
            f"downlink: 1e30, dropout: {dropout}}}]}}")


def _toy(hospitals: int, size: int = 30) -> ToyTask:
    task = ToyTask(num_hospitals=hospitals)
    task.sizes = np.full(hospitals, size)
    return task


def test_fedbuff_weighs_each_update_by_one_over_sqrt_one_plus_staleness_and_averages_over_the_buffer() -> None:
    w = {"w": np.array([1.0, 2.0], dtype=np.float32), "count": np.array(3)}
    deltas = [np.array([0.4, -0.8]), np.array([1.0, 1.0]), np.array([-2.0, 0.5])]
    arrivals = [Arrival(h, tau, {"w": d}) for h, (tau, d) in enumerate(zip([0, 1, 3], deltas))]
    updated, metrics = FedBuff(3, 0.5, POLYNOMIAL).step(w, arrivals)
    # w + 0.5 * (1/3) * (1 * d0 + 1/sqrt(2) * d1 + 1/2 * d2), by hand:
    by_hand = [1.0 + 0.5 / 3 * (0.4 + 0.7071067811865476 * 1.0 - 1.0), 2.0 + 0.5 / 3 * (-0.8 + 0.7071067811865476 * 1.0 + 0.25)]
    np.testing.assert_allclose(updated["w"], by_hand, rtol=1e-7)
    assert updated["w"].dtype == np.float32 and updated["count"] == 3  # integer bookkeeping kept
    assert metrics["mean_staleness_weight"] == pytest.approx((1 + 2**-0.5 + 0.5) / 3)
    constant, _ = FedBuff(3, 1.0, StalenessConfig(kind="constant")).step(w, arrivals)
    np.testing.assert_allclose(constant["w"], w["w"] + (deltas[0] + deltas[1] + deltas[2]) / 3, rtol=1e-7)


@pytest.mark.parametrize("staleness, staleness_weight", [
    (POLYNOMIAL, 0.5),  # (3 + 1)^-0.5
    (StalenessConfig(kind="polynomial", exponent=1.0), 0.25),  # (3 + 1)^-1
    (StalenessConfig(kind="constant"), 1.0),
])
def test_fedasync_mixes_in_each_arrival_with_alpha_times_its_staleness_weight(staleness, staleness_weight) -> None:
    w = {"w": np.array([1.0, -1.0], dtype=np.float32)}
    trained = np.array([3.0, 1.0])
    updated, metrics = FedAsync(0.6, staleness).step(w, [Arrival(0, 3, {"w": trained})])
    alpha_t = 0.6 * staleness_weight
    assert metrics["alpha"] == pytest.approx(alpha_t)
    np.testing.assert_allclose(updated["w"], (1 - alpha_t) * w["w"] + alpha_t * trained, rtol=1e-7)


def _async_run(task: ToyTask, strategy, settings: list[str], workers: int = 1):
    config = load_config(None, SMALL[:1] + [f"data.hospitals={task.num_hospitals}", "train.epochs=1", *settings])
    backend = InProcessBackend(task, strategy, Pipeline([]), task.initial_params(0), config.seed, workers)
    return config, backend, AsynchronousRun(config, task, RoundSchedule(config, task), strategy.buffer_size)


def test_fedbuff_with_the_buffer_the_cohort_and_no_staleness_is_fedavg() -> None:
    """Equal hospitals arrive together: every update has staleness 0, each step averages the
    cohort's deltas, and the refill samples the next cohort as a synchronous round does.
    FedBuff adds the mean delta to w in float64 where FedAvg sums weighted models in fixed point,
    so the two float32 models agree to float32 rounding, not bit for bit."""
    task = _toy(6)
    settings = ["sampling.clients_per_round=4", _one_tier(), "rounds=5"]
    config, backend, loop = _async_run(task, FedBuff(4, 1.0, POLYNOMIAL), settings, workers=2)
    sync = InProcessBackend(task, FedAvg(), Pipeline([]), task.initial_params(0), config.seed, 2)
    schedule = RoundSchedule(config, task)
    for step in range(1, 6):
        outcome = loop.step(backend, step)
        cohort = schedule.cohort(step)
        run_round(sync, task, step, cohort, None)
        assert sorted(r.hospital for r in outcome.reports) == cohort.hospitals.tolist()
        assert [c["staleness"] for c in outcome.timeline.columns] == [0.0] * 4
        np.testing.assert_allclose(backend.server.broadcast["w"], sync.server.broadcast["w"], rtol=1e-6, atol=1e-7)
    assert not np.allclose(backend.server.broadcast["w"], task.initial_params(0)["w"])


def test_staleness_is_logged_per_update_on_a_hand_checkable_run(tmp_path) -> None:
    """Four hospitals, two fast (1 s per update) and two slow (3 s), all training at once,
    FedAsync applying each arrival: arrivals at the same instant are taken by dispatch, then
    hospital id, and a freed slot is refilled only once nobody else arrives at that instant."""
    task = _toy(4)
    tiers = ("systems={tiers: [{name: fast, share: 0.5, samples_per_second: 30, uplink: 1e30, downlink: 1e30}, "
             "{name: slow, share: 0.5, samples_per_second: 10, uplink: 1e30, downlink: 1e30}]}")
    config, backend, loop = _async_run(task, FedAsync(0.6, POLYNOMIAL), ["rounds=8", tiers])
    fast = sorted(np.flatnonzero(loop.profiles.tier == 0).tolist())
    slow = sorted(np.flatnonzero(loop.profiles.tier == 1).tolist())
    outcomes = [loop.step(backend, step) for step in range(1, 9)]
    # t=1: both fast ones (dispatch 1, version 0) -> versions 1, 2; they restart from version 2.
    # t=2: both fast again -> versions 3, 4; restart from 4. t=3: the slow ones (dispatch 1,
    # version 0) come first, then the fast ones (dispatch 3, version 4).
    expected = [(fast[0], 0, 0), (fast[1], 0, 1), (fast[0], 2, 0), (fast[1], 2, 1),
                (slow[0], 0, 4), (slow[1], 0, 5), (fast[0], 4, 2), (fast[1], 4, 3)]
    logged = [(o.reports[0].hospital, o.timeline.columns[0]["version"], o.timeline.columns[0]["staleness"]) for o in outcomes]
    assert logged == expected
    assert [o.timeline.columns[0]["sim_start"] + o.timeline.columns[0]["sim_finish"] for o in outcomes] == [1, 1, 2, 2, 3, 3, 3, 3]
    assert [o.round_metrics["strategy_alpha"] for o in outcomes] == pytest.approx([0.6 * (tau + 1) ** -0.5 for _, _, tau in expected])


def _fedbuff_settings(*extra: str) -> list[str]:
    return SMALL + ["rounds=4", "systems={}", "strategy={name: fedbuff, buffer_size: 3}", "sampling.clients_per_round=5", *extra]


def test_a_fedbuff_run_logs_server_steps_and_arrivals(tmp_path) -> None:
    Simulation(load_config(None, _fedbuff_settings()), tmp_path, quiet=True).run()
    rounds = pq.read_table(tmp_path / "rounds.parquet").to_pydict()
    clients = pq.read_table(tmp_path / "clients.parquet").to_pydict()
    assert rounds["round"] == [1, 2, 3, 4] and rounds["kept"] == [3, 3, 3, 3]
    assert rounds["sim_clock"] == pytest.approx(np.cumsum(rounds["sim_seconds"]).tolist())
    assert all(not np.isnan(a) for a in rounds["global_accuracy"])
    for step in range(1, 5):
        rows = [i for i, r in enumerate(clients["round"]) if r == step]
        kept = [i for i in rows if clients["kept"][i]]
        assert len(kept) == 3
        # staleness: versions since it started; the step came when its third update arrived
        assert all(clients["staleness"][i] == step - 1 - clients["version"][i] for i in kept)
        arrivals = [clients["sim_start"][i] + clients["sim_finish"][i] for i in kept]
        assert max(arrivals) == pytest.approx(rounds["sim_clock"][step - 1])
    assert {"ok", "dropped out"} <= set(clients["status"])  # the built-in tiers drop out now and then
    header = render_report(tmp_path).splitlines()[1]
    assert "training at once, rows are server steps" in header and "per round" not in header


@pytest.mark.parametrize("settings", [
    [],
    ["pipeline=[{stage: clip, max_norm: 1.0}]", "attack={kind: sign_flip, fraction: 0.25}"],  # hospital halves
    ["sampling.scheme=proportional", "strategy={name: fedasync}"],
], ids=["fedbuff", "fedbuff+clip+attack", "fedasync-proportional"])
def test_an_asynchronous_run_is_identical_on_one_and_two_workers_in_process(settings, tmp_path) -> None:
    for workers in (1, 2):
        config = load_config(None, _fedbuff_settings(f"engine.workers={workers}", *settings))
        Simulation(config, tmp_path / str(workers), quiet=True).run()
    assert_same_run(tmp_path / "1", tmp_path / "2")


@pytest.mark.parametrize("strategy", ["{name: fedbuff, buffer_size: 3}", "{name: fedasync}"])
def test_a_resumed_asynchronous_run_is_bitwise_the_uninterrupted_one(strategy, tmp_path, monkeypatch) -> None:
    settings = _fedbuff_settings(f"strategy={strategy}", "engine.workers=2")
    Simulation(load_config(None, settings), tmp_path / "clean", quiet=True).run()
    with interrupted_in_round(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        Simulation(load_config(None, settings), tmp_path / "stopped", quiet=True).run()
    Simulation.resume(tmp_path / "stopped", quiet=True).run()
    assert_same_run(tmp_path / "clean", tmp_path / "stopped")


def test_evaluation_every_so_many_simulated_seconds(tmp_path) -> None:
    Simulation(load_config(None, _fedbuff_settings("rounds=8", "eval.every_seconds=1.0")), tmp_path, quiet=True).run()
    rounds = pq.read_table(tmp_path / "rounds.parquet").to_pydict()
    evaluated = [not np.isnan(a) for a in rounds["global_accuracy"]]
    last_second = 0  # the first step at or past each whole simulated second is evaluated, and the last step
    for step, (clock, scored) in enumerate(zip(rounds["sim_clock"], evaluated), start=1):
        assert scored == (math.floor(clock) > last_second or step == 8), (step, clock)
        last_second = math.floor(clock) if scored else last_second
    assert 1 < sum(evaluated) < 8


def test_fedbuff_trains_the_scheduling_dqn_identically_on_one_and_two_workers(tmp_path) -> None:
    for workers in (1, 2):
        settings = SCHEDULING + ["rounds=2", "engine.backend=in_process", f"engine.workers={workers}", "systems={}",
                                 "strategy={name: fedbuff, buffer_size: 3}", "sampling.clients_per_round=3"]
        Simulation(load_config(None, settings), tmp_path / str(workers), quiet=True).run()
    assert_same_run(tmp_path / "1", tmp_path / "2")
    rounds = pq.read_table(tmp_path / "1" / "rounds.parquet").to_pydict()
    assert rounds["kept"] == [3, 3] and not any(np.isnan(rounds["global_acuity_weighted_wait"]))


@pytest.mark.parametrize("settings, message", [
    (["strategy=fedbuff"], "strategy.name: fedbuff runs on the simulated clock, which needs a systems section"),
    (["strategy=fedasync", "systems={deadline: 5}"], "systems.deadline: not with strategy fedasync"),
    (["strategy=fedbuff", "systems={over_selection: 0.2}"], "systems.over_selection: not with strategy fedbuff"),
    (["strategy=fedbuff", "systems={}", "sampling.scheme=poisson"], "sampling.scheme: not with strategy fedbuff"),
    (["strategy=fedbuff", "systems={}", "secure_aggregation={threshold: 2, neighbours: 2}"], "secure_aggregation: not with strategy fedbuff"),
    (["strategy=fedbuff", "systems={}", "privacy={mechanism: central, clip_norm: 1, noise_multiplier: 1}"], "privacy: not with strategy fedbuff"),
    (["strategy=fedbuff", "systems={}", "compression={scheme: topk}"], "compression.scheme: strategy fedbuff is not supported"),
    (["eval.every_seconds=60"], "eval.every_seconds: only for asynchronous strategies"),
    (["strategy={name: fedasync, staleness: {kind: hinge}}", "systems={}"], "strategy.staleness.kind"),
])
def test_settings_asynchronous_aggregation_cannot_honour_are_refused_in_one_line(settings, message) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_config(None, SMALL + settings)
    assert "\n" not in str(error.value)


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["{name: fedbuff, buffer_size: 3}", "{name: fedasync}"])
def test_an_asynchronous_ray_run_is_identical_on_one_and_two_workers(strategy, ray_cluster, tmp_path) -> None:
    for workers in (1, 2):
        settings = _fedbuff_settings(f"strategy={strategy}", "engine.backend=ray", f"engine.workers={workers}")
        Simulation(load_config(None, settings), tmp_path / str(workers), quiet=True).run()
    Simulation(load_config(None, _fedbuff_settings(f"strategy={strategy}", "engine.workers=2")), tmp_path / "in_process", quiet=True).run()
    assert_same_run(tmp_path / "1", tmp_path / "2")
    assert_same_run(tmp_path / "1", tmp_path / "in_process")
