"""Systems realism (fedsim.systems): profiles from the seed, the simulated clock's formula,
deadlines, partial work, over-selection, availability windows and dropouts seen by secure
aggregation."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedsim.config import load_config
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import RoundSchedule, run_round
from fedsim.engine.sampling import available_hospitals, proportional_hospitals
from fedsim.errors import ConfigError
from fedsim.pipeline.base import Pipeline
from fedsim.privacy.secagg import SecureAggregation, SecureAggregationConfig
from fedsim.protocol import ClientReport, Instruction, LocalPlan
from fedsim.quarantine import OK
from fedsim.seeding import Stream, rng_for
from fedsim.simulation import Simulation
from fedsim.strategies.fedavg import FedAvg
from fedsim.systems.clock import DROPPED_OUT, LATE, OVER_SELECTED, SystemsRound
from fedsim.systems.config import SystemsConfig, TierConfig
from fedsim.systems.profiles import SystemProfiles, hour_of_day, tier_counts
from fedsim.tasks.factory import build_task
from toy_task import ToyTask, full_cohort

SMALL = [
    "data.source={kind: synthetic, classes: 3, train_samples: 600, test_samples: 150}",
    "data.hospitals=8",
    "train.epochs=1",
    "engine.backend=in_process",
    "engine.workers=1",
]


def _profiles(speed, up, down, dropout=None, start=None, end=None) -> SystemProfiles:
    n = len(speed)
    return SystemProfiles(
        ("hand",), np.zeros(n, dtype=np.int64), np.array(speed, float), np.array(up, float), np.array(down, float),
        np.array(start if start is not None else [0.0] * n), np.array(end if end is not None else [24.0] * n),
        np.array(dropout if dropout is not None else [0.0] * n),
    )


def _instructions(epochs, max_steps=None) -> list[Instruction]:
    steps = max_steps or [None] * len(epochs)
    return [Instruction(h, 1.0 / len(epochs), LocalPlan(epochs=e, max_steps=s)) for h, (e, s) in enumerate(zip(epochs, steps))]


def _reports(uploads) -> list[ClientReport]:
    return [ClientReport(h, 0, 1, 0.0, 0.0, int(u), {}) for h, u in enumerate(uploads)]


def _round(profiles, sizes, per_round=None, step_samples=None, **spec) -> SystemsRound:
    tier = TierConfig(name="hand", share=1.0, samples_per_second=1.0, uplink=1.0, downlink=1.0)
    config = SystemsConfig(tiers=(tier,), **spec)
    return SystemsRound(config, profiles, np.array(sizes), step_samples, per_round or len(sizes), run_seed=0)


# A hand-built cohort: sizes, epochs, speeds and links chosen so the times are round numbers.
SIZES, EPOCHS = [100, 200, 50], [2, 1, 4]
PROFILES = _profiles(speed=[100.0, 20.0, 10.0], up=[1000.0, 500.0, 100.0], down=[2000.0, 1000.0, 400.0])
BROADCAST, UPLOADS = 4000, [2000, 1000, 800]
# download + compute + upload = 4000/down + n*E/speed + U/up
EXPECTED = [4000 / 2000 + 200 / 100 + 2000 / 1000, 4000 / 1000 + 200 / 20 + 1000 / 500, 4000 / 400 + 200 / 10 + 800 / 100]


def test_the_clock_follows_download_plus_compute_plus_upload_and_waits_for_the_last() -> None:
    timeline = _round(PROFILES, SIZES).settle(1, _instructions(EPOCHS), _reports(UPLOADS), BROADCAST)
    assert EXPECTED == [6.0, 16.0, 38.0]
    assert [timeline.finish[h] for h in range(3)] == pytest.approx(EXPECTED, rel=1e-12)
    assert timeline.seconds == pytest.approx(38.0)
    assert timeline.kept == [0, 1, 2]


def test_a_deadline_drops_exactly_the_hospitals_that_would_miss_it() -> None:
    timeline = _round(PROFILES, SIZES, deadline=20.0).settle(1, _instructions(EPOCHS), _reports(UPLOADS), BROADCAST)
    assert timeline.kept == [0, 1]
    assert timeline.status[2] == LATE
    assert timeline.seconds == 20.0  # the server cannot know hospital 2 will not come: it waits out the deadline
    on_time = _round(PROFILES, SIZES, deadline=50.0).settle(1, _instructions(EPOCHS), _reports(UPLOADS), BROADCAST)
    assert on_time.kept == [0, 1, 2] and on_time.seconds == pytest.approx(38.0)


def test_over_selection_keeps_the_first_k_to_arrive() -> None:
    timeline = _round(PROFILES, SIZES, per_round=2, over_selection=0.5).settle(1, _instructions(EPOCHS), _reports(UPLOADS), BROADCAST)
    assert timeline.kept == [0, 1]
    assert timeline.status[2] == OVER_SELECTED
    assert timeline.seconds == pytest.approx(16.0)


def test_partial_work_plans_exactly_the_steps_that_fit_and_the_task_runs_exactly_those() -> None:
    config = load_config(None, SMALL + ["train.batch_size=8", "train.epochs=3"])
    task = build_task(config)
    sizes = task.hospital_sizes()
    hospitals = [0, 1]
    profiles = _profiles(speed=[1e6, 10.0], up=[1e9, 1e9], down=[1e9, 1e9])
    deadline = 5.0
    systems = _round(profiles, sizes[hospitals], step_samples=task.step_samples()[hospitals], deadline=deadline, stragglers="partial")
    planned = systems.plan(_instructions([3, 3]), broadcast_bytes=1000)
    links = 1000 / 1e9 + 1000 / 1e9
    assert planned[0].plan.max_steps is None  # the fast hospital's full work fits
    expected_steps = int(np.floor((deadline - links) * 10.0 / 8))
    assert planned[1].plan.max_steps == expected_steps == 6
    assert expected_steps < 3 * np.ceil(sizes[1] / 8)  # really partial
    result = task.train(1, task.initial_params(0), planned[1].plan, None, seed=3)
    assert result.steps == expected_steps
    timeline = systems.settle(1, planned, _reports([1000, 1000]), 1000)
    assert timeline.finish[1] <= deadline and timeline.kept == [0, 1]
    assert timeline.finish[1] == pytest.approx(1000 / 1e9 + expected_steps * 8 / 10.0 + 1000 / 1e9)


def test_availability_windows_decide_who_is_online_and_sampled() -> None:
    profiles = _profiles([1.0] * 4, [1.0] * 4, [1.0] * 4, start=[0.0, 8.0, 22.0, 8.0], end=[24.0, 18.0, 6.0, 18.0])
    assert profiles.online(3.0).tolist() == [True, False, True, False]  # 22:00-06:00 wraps past midnight
    assert profiles.online(12.0).tolist() == [True, True, False, True]
    assert profiles.online(18.0).tolist() == [True, False, False, False]  # [start, end)
    assert hour_of_day(22.0, 5 * 3600.0) == pytest.approx(3.0)
    night = {"name": "night", "share": 0.5, "samples_per_second": 100, "uplink": 1e6, "downlink": 1e6, "online": [8, 18]}
    day = {"name": "day", "share": 0.5, "samples_per_second": 100, "uplink": 1e6, "downlink": 1e6}
    config = load_config(None, SMALL + [f"systems={{tiers: [{_flow(night)}, {_flow(day)}], start_hour: 3}}"])
    schedule = RoundSchedule(config, build_task(config))
    always = np.flatnonzero(schedule.profiles.online_end == 24.0)
    assert np.array_equal(schedule.cohort(1, clock=0.0).hospitals, always)  # 03:00: only the always-online half
    assert len(schedule.cohort(1, clock=9 * 3600.0).hospitals) == 8  # 12:00: everyone


def _flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in mapping.items()) + "}"


def test_tiers_are_drawn_from_the_seed_with_their_shares_and_written_to_systems_parquet(tmp_path) -> None:
    assert tier_counts(np.array([0.2, 0.5, 0.3]), 50).tolist() == [10, 25, 15]
    assert tier_counts(np.array([0.5, 0.5]), 3).tolist() == [2, 1]
    spec = SystemsConfig()
    first, again, other = (SystemProfiles.draw(spec, 50, seed) for seed in (0, 0, 1))
    assert np.array_equal(first.tier, again.tier) and not np.array_equal(first.tier, other.tier)
    assert np.bincount(first.tier).tolist() == [10, 25, 15]
    Simulation(load_config(None, SMALL + ["rounds=1", "systems={}"]), tmp_path / "run", quiet=True).run()
    table = pq.read_table(tmp_path / "run" / "systems.parquet").to_pydict()
    drawn = SystemProfiles.draw(spec, 8, 0)
    assert table["hospital"] == list(range(8))
    assert table["tier"] == [drawn.tier_names[t] for t in drawn.tier]
    assert table["samples_per_second"] == drawn.samples_per_second.tolist()


def _fast_tiers(dropout: float = 0.0) -> str:
    return (f"systems={{tiers: [{{name: fast, share: 1, samples_per_second: 1e6, uplink: 1e9, downlink: 1e9, "
            f"dropout: {dropout}}}]}}")


def test_systems_without_stragglers_or_dropouts_give_the_same_model_as_none(tmp_path) -> None:
    def final(*extra: str) -> dict:
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        result = Simulation(load_config(None, SMALL + ["rounds=2", *extra]), run, quiet=True)
        result.run()
        return pq.read_table(run / "rounds.parquet").to_pydict(), run

    plain, _ = final()
    timed, run = final(_fast_tiers())
    assert plain["global_accuracy"] == timed["global_accuracy"] and plain["global_loss"] == timed["global_loss"]
    assert all(s > 0 for s in timed["sim_seconds"])
    assert timed["sim_clock"] == pytest.approx(np.cumsum(timed["sim_seconds"]).tolist())
    clients = pq.read_table(run / "clients.parquet").to_pydict()
    assert all(clients["kept"]) and all(status == OK for status in clients["status"])
    for r in (1, 2):  # a round lasts until its last kept hospital arrives
        finishes = [f for f, rr in zip(clients["sim_finish"], clients["round"]) if rr == r]
        assert timed["sim_seconds"][r - 1] == max(finishes)


def test_dropouts_are_left_out_and_secure_aggregation_recovers_exactly_those() -> None:
    task = ToyTask(num_hospitals=8)
    cohort = full_cohort(task)
    secure = SecureAggregation(SecureAggregationConfig(threshold=2, neighbours=4), 5)
    profiles = _profiles([1e6] * 8, [1e9] * 8, [1e9] * 8, dropout=[0.2] * 8)
    systems = _round(profiles, task.hospital_sizes())
    dropped = [h for h in range(8) if rng_for(0, Stream.SYSTEM_DROPOUT, 1, h).random() < 0.2]
    assert 0 < len(dropped) < 8

    def outcome(pipeline, systems_round=None, hospitals=None):
        backend = InProcessBackend(task, FedAvg(), pipeline, task.initial_params(0), 11, workers=2)
        result = run_round(backend, task, 1, full_cohort(task, hospitals) if hospitals else cohort, None, systems_round)
        return backend.server.broadcast["w"], result

    masked, result = outcome(Pipeline([], secure_aggregation=secure), systems)
    assert [r.hospital for r in result.reports if r.status == DROPPED_OUT] == dropped
    assert result.round_metrics["pipeline_secagg_dropped"] == len(dropped)
    assert result.round_metrics["pipeline_secagg_failed"] == 0.0
    survivors = [h for h in range(8) if h not in dropped]
    plain, _ = outcome(Pipeline([]), systems)
    alone, _ = outcome(Pipeline([]), hospitals=survivors)
    np.testing.assert_allclose(masked, alone, rtol=1e-12)  # FedAvg over the survivors
    np.testing.assert_allclose(plain, alone, rtol=1e-12)


def test_hospitals_left_out_keep_their_state_from_before_the_round() -> None:
    task = ToyTask(num_hospitals=6)  # counts each hospital's rounds in its state
    profiles = _profiles([1.0] * 6, [1e9] * 6, [1e9] * 6)
    sizes = task.hospital_sizes()
    systems = _round(profiles, sizes, deadline=float(np.median(sizes)))  # the larger half is late
    backend = InProcessBackend(task, FedAvg(), Pipeline([]), task.initial_params(0), 11, workers=2)
    outcome = run_round(backend, task, 1, full_cohort(task), None, systems)
    late = {r.hospital for r in outcome.reports if r.status == LATE}
    assert late == {h for h in range(6) if sizes[h] > np.median(sizes)}
    assert all(backend.states[h].task == 1 for h in range(6) if h not in late)
    assert all(h not in backend.states for h in late)


def test_a_systems_run_is_identical_on_one_and_two_workers(tmp_path) -> None:
    def run(workers: int):
        settings = SMALL[:-1] + [f"engine.workers={workers}", "rounds=2", "systems={deadline: 2, stragglers: partial}",
                                 "sampling.clients_per_round=6"]
        Simulation(load_config(None, settings), tmp_path / str(workers), quiet=True).run()
        clients = pq.read_table(tmp_path / str(workers) / "clients.parquet").select(["round", "hospital", "samples", "steps", "status", "sim_finish"])
        return pq.read_table(tmp_path / str(workers) / "rounds.parquet").select(["global_loss", "sim_seconds", "sim_clock"]), clients

    one, two = run(1), run(2)
    assert one[0].equals(two[0])
    assert one[1].to_pandas().equals(two[1].to_pandas())  # NaN-aware: a dropped-out hospital has no finish time
    clients = one[1].to_pydict()
    full = [int(np.ceil(n / 16)) for n in clients["samples"]]  # one epoch of batches of 16
    assert any(steps < whole for steps, whole in zip(clients["steps"], full))  # a rural clinic did partial work


def test_proportional_and_available_sampling() -> None:
    sizes = np.array([1, 1, 1, 1, 100, 100, 100, 100])
    counts = np.zeros(8)
    for r in range(1, 401):
        chosen = proportional_hospitals(0, r, sizes, 2)
        assert len(chosen) == 2 and len(set(chosen.tolist())) == 2
        counts[chosen] += 1
    assert counts[:4].sum() < 0.1 * counts[4:].sum()  # ~1% of the draws would land on the small ones
    online = np.array([True, False, True, True, False, True, False, True])
    for r in range(1, 50):
        chosen = available_hospitals(0, r, online, 3)
        assert len(chosen) == 3 and online[chosen].all()
    assert available_hospitals(0, 1, online, 9).tolist() == np.flatnonzero(online).tolist()


@pytest.mark.parametrize("settings, message", [
    (["sampling.scheme=available"], "needs a systems section"),
    (["systems={}", "sampling.scheme=available", "privacy={mechanism: central, clip_norm: 1, noise_multiplier: 1}"],
     "central DP's accountant assumes"),
    (["systems={over_selection: 0.2}", "sampling.scheme=poisson"], "needs a cohort of fixed size"),
    (["systems={}", "secure_aggregation={threshold: 2, neighbours: 2, dropout: 0.1}"], "set secure_aggregation.dropout to 0"),
    (["systems={stragglers: partial}"], "needs a deadline"),
])
def test_settings_systems_cannot_honour_are_refused_in_one_line(settings, message) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_config(None, SMALL + settings)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("settings", [
    ["secure_aggregation={threshold: 2, neighbours: 2}"],  # contributions held, masked once the clock settled
    ["strategy=fedmrl"],  # weighs after training: only the kept hospitals' summaries are weighed
    ["strategy=median"],  # individual updates: only the kept hospitals' are combined
], ids=["fedavg+secagg", "fedmrl", "median"])
def test_ray_and_in_process_systems_runs_are_bitwise_identical(settings, ray_cluster, tmp_path) -> None:
    overrides = SMALL[:3] + ["engine.workers=2", "rounds=2", "sampling.clients_per_round=6",
                             "systems={deadline: 1.5, tiers: [{name: fast, share: 0.5, samples_per_second: 1000, uplink: 1e7, "
                             "downlink: 1e7, dropout: 0.2}, {name: slow, share: 0.5, samples_per_second: 20, uplink: 5e5, "
                             "downlink: 1e6, dropout: 0.2}]}", *settings]
    for backend in ("ray", "in_process"):
        Simulation(load_config(None, overrides + [f"engine.backend={backend}"]), tmp_path / backend, quiet=True).run()
    clients = pq.read_table(tmp_path / "ray" / "clients.parquet").to_pydict()
    assert {"ok", LATE} <= set(clients["status"])  # the deadline bit, some were kept
    for table in ("rounds", "clients", "hospital_eval"):
        first, second = (pq.read_table(tmp_path / run / f"{table}.parquet").to_pydict() for run in ("ray", "in_process"))
        for column in first.keys() - {"seconds", "strategy_qmix_som_seconds"}:
            np.testing.assert_array_equal(np.array(first[column]), np.array(second[column]), err_msg=f"{table}.{column}")
