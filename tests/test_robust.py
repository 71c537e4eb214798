"""Robust aggregation (median, trimmed mean, Krum) against hand-computed choices, and attacks."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.attacks import attack_stages, attackers
from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.pipeline.base import Pipeline
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.krum import Krum
from fedsim.strategies.median import Median
from fedsim.strategies.trimmed_mean import TrimmedMean
from fedsim.tasks.factory import build_task
from in_process import SEED, one_round
from test_bad_input import TINY
from toy_task import ToyTask, full_cohort

HAND = [[1.0, 10.0, 0.0], [2.0, -5.0, 0.0], [3.0, 0.0, 100.0], [4.0, 1.0, 0.0], [100.0, 2.0, 0.0]]


def updates(rows: list[list[float]]) -> list[tuple[int, dict[str, np.ndarray]]]:
    return [(hospital, {"w": np.array(row)}) for hospital, row in enumerate(rows)]


def test_median_and_trimmed_mean_by_hand() -> None:
    assert Median().combine(updates(HAND))["w"].tolist() == [3.0, 1.0, 0.0]
    # trim 0.2 of 5: drop the lowest and highest per coordinate, average the middle three
    assert TrimmedMean(0.2).combine(updates(HAND))["w"].tolist() == [3.0, 1.0, 0.0]
    assert TrimmedMean(0.0).combine(updates(HAND))["w"].tolist() == pytest.approx([22.0, 1.6, 20.0])


def test_krum_choice_by_hand() -> None:
    points = updates([[0.0], [1.0], [2.0], [3.0], [100.0]])
    # f = floor(0.2 * 5) = 1, so n - f - 2 = 2 neighbours: scores 1+4, 1+1, 1+1, 1+4, 97^2+98^2
    krum = Krum(byzantine=0.2, select=1)
    assert krum.scores(points).tolist() == [5.0, 2.0, 2.0, 5.0, 97.0**2 + 98.0**2]
    assert krum.combine(points)["w"].tolist() == [1.0]  # the tie between 1 and 2 goes to the lower id
    assert {h: m["krum_selected"] for h, m in krum.hospital_metrics().items()} == {0: 0, 1: 1, 2: 0, 3: 0, 4: 0}
    assert Krum(0.2, select=3).combine(points)["w"].tolist() == [1.0]  # 1, 2 and then 0 (tie with 3)
    assert Krum(0.2, select=4).combine(points)["w"].tolist() == [1.5]


@pytest.mark.parametrize("make", [Median, lambda: TrimmedMean(0.2), lambda: Krum(0.2, 2)], ids=["median", "trimmed_mean", "krum"])
def test_robust_round_through_the_engine_is_bitwise_the_same_on_any_worker_count(make) -> None:
    task = ToyTask()
    start = task.initial_params(0)["w"]
    local = [task.local_update(h, start, seed_for(SEED, Stream.LOCAL_TRAINING, 1, h)) for h in range(task.num_hospitals)]
    expected = make().combine([(h, {"w": w.astype(np.float64) - start}) for h, w in enumerate(local)])["w"]
    results = [one_round(task, make(), full_cohort(task), workers=workers)[0]["w"] for workers in (1, 2, 4)]
    np.testing.assert_allclose(results[0], expected.astype(np.float32))
    assert all(np.array_equal(result, results[0]) for result in results)


def test_attackers_are_a_pure_function_of_the_seed() -> None:
    assert attackers(3, 20, 0.3) == attackers(3, 20, 0.3) and len(attackers(3, 20, 0.3)) == 6
    assert len({attackers(seed, 20, 0.3) for seed in range(5)}) > 1
    assert attackers(3, 20, 0.0) == frozenset() and attackers(3, 20, 1.0) == frozenset(range(20))


@pytest.mark.parametrize("kind, factor", [("sign_flip", -1.0), ("scale", 10.0), ("gaussian", None)])
def test_update_attacks_send_what_they_say(kind: str, factor: float | None) -> None:
    task = ToyTask()
    config = load_config(None, [f"attack.kind={kind}", "attack.fraction=0.5", f"seed={SEED}", "data.hospitals=6", "attack.noise_std=2e-1"])
    malicious = attackers(SEED, 6, 0.5)
    broadcast, reports, _, _ = one_round(task, FedAvg(), full_cohort(task), pipeline=Pipeline(attack_stages(config, 6)))
    sizes = task.hospital_sizes().astype(np.float64)
    start = np.zeros(5)
    sent = []
    for h in range(6):
        delta = task.local_update(h, start.astype(np.float32), seed_for(SEED, Stream.LOCAL_TRAINING, 1, h)).astype(np.float64)
        if h in malicious:
            noise = np.random.default_rng(seed_for(SEED, Stream.UPDATE_STAGE, 1, h, 0)).normal(0.0, 0.2, size=5)
            delta = noise if factor is None else factor * delta
        sent.append(delta)
    expected = sum(n * d for n, d in zip(sizes, sent)) / sizes.sum()
    np.testing.assert_allclose(broadcast["w"], expected, atol=1e-6)
    assert {r.hospital for r in reports if r.metrics["attacker"] == 1.0} == malicious


def test_label_flip_flips_only_the_attackers_training_labels() -> None:
    clean = build_task(load_config(None, TINY))
    flipped = build_task(load_config(None, [*TINY, "attack.kind=label_flip", "attack.fraction=0.34"]))
    malicious = attackers(0, 3, 0.34)
    assert len(malicious) == 1
    classes = clean.federation.dataset.num_classes
    for hospital in range(3):
        images, before = clean.federation.hospital_arrays(hospital, "train")
        same_images, after = flipped.federation.hospital_arrays(hospital, "train")
        assert np.array_equal(after, classes - 1 - before if hospital in malicious else before)
        assert np.array_equal(images, same_images)  # only the labels lie
        _, test_before = clean.federation.hospital_arrays(hospital, "test")
        _, test_after = flipped.federation.hospital_arrays(hospital, "test")
        assert np.array_equal(test_before, test_after)


def test_median_resists_scaled_attackers_where_fedavg_does_not() -> None:
    task = ToyTask(num_hospitals=7)
    config = load_config(None, ["attack.kind=scale", "attack.factor=100", "attack.fraction=0.29", f"seed={SEED}", "data.hospitals=7"])
    pipeline = Pipeline(attack_stages(config, 7))
    honest, *_ = one_round(task, FedAvg(), full_cohort(task))
    averaged, *_ = one_round(task, FedAvg(), full_cohort(task), pipeline=pipeline)
    median, *_ = one_round(task, Median(), full_cohort(task), pipeline=pipeline)
    assert np.linalg.norm(averaged["w"] - honest["w"]) > 10 * np.linalg.norm(median["w"] - honest["w"])


def test_robust_config_checks() -> None:
    with pytest.raises(ConfigError, match="strategy.byzantine: Krum needs n - f - 2 >= 1"):
        load_config(None, ["data.hospitals=3", 'strategy={"name": "krum", "byzantine": 0.4}'])
    with pytest.raises(ConfigError, match="strategy.trim"):
        load_config(None, ['strategy={"name": "trimmed_mean", "trim": 0.5}'])
    with pytest.raises(ConfigError, match="attack.kind: label_flip flips class labels"):
        load_config(None, ["task=scheduling", "attack.kind=label_flip", "attack.fraction=0.2"])
    with pytest.raises(ConfigError, match="strategy.max_round_bytes: 3 hospitals"):
        config = load_config(None, [*TINY, 'strategy={"name": "median", "max_round_bytes": 1000}'])
        config.strategy.build(config, build_task(config))


@pytest.mark.parametrize("strategy", ["median", "krum", "fedmrl"])
def test_robust_attacked_and_quarantined_runs_match_bitwise_across_backends(strategy: str, ray_cluster, tmp_path) -> None:
    """Ray on 2 workers and in-process on 1 give the same bits with individual updates (median,
    Krum) and with weighing after training (FedMRL), attackers and quarantined hospitals included."""
    import pyarrow.parquet as pq

    from fedsim.simulation import Simulation
    from test_round_protocol import SMALL, _assert_same_metrics

    overrides = SMALL + ["rounds=2", "sampling.clients_per_round=6", f"strategy={strategy}",
                         "attack={kind: gaussian, fraction: 0.25, noise_std: 10}", "quarantine.max_norm=50"]
    for backend, workers in (("ray", 2), ("in_process", 1)):
        config = load_config(None, overrides + [f"engine.backend={backend}", f"engine.workers={workers}"])
        Simulation(config, tmp_path / backend, quiet=True).run()
    for table in ("rounds", "clients", "hospital_eval"):
        _assert_same_metrics(tmp_path / "ray", tmp_path / "in_process", table)
    clients = pq.read_table(tmp_path / "ray" / "clients.parquet").to_pylist()
    quarantined = {row["hospital"] for row in clients if row["status"] != "ok"}
    assert quarantined == set(attackers(0, 8, 0.25)) & {row["hospital"] for row in clients}
    assert quarantined and all(row["attacker"] == 1.0 for row in clients if row["hospital"] in quarantined)
