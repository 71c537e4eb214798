"""The bounds every federated row is read against: the centralised baseline (one model on the
pooled training data) and local-only training (each hospital alone)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.nn import functional as F

from fedsim.config import ConfigError, load_config
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import RoundSchedule, run_round
from fedsim.pipeline.base import Pipeline
from fedsim.seeding import Stream, seed_for
from fedsim.simulation import Simulation
from fedsim.strategies import build_strategy
from fedsim.tasks.factory import build_task
from fedsim.torch_params import load_params

TINY = [
    "data.source={kind: synthetic, classes: 3, train_samples: 180, test_samples: 30}",
    "data.hospitals=4",
    "train.epochs=2",
    "train.batch_size=16",
    "train.momentum=0.5",
    "engine.backend=in_process",
]


def _run(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    out = tmp_path / name
    Simulation(load_config(None, TINY + overrides), out, quiet=True).run()
    return out


def test_centralised_equals_a_hand_written_pooled_training_loop(tmp_path: Path) -> None:
    """Every round: the hospitals' training splits concatenated in hospital order, shuffled by
    the site's (hospital 0's) local-training seed, `train.epochs` epochs of SGD with momentum."""
    overrides = ["rounds=2", "strategy=centralised", "engine.workers=2"]
    config = load_config(None, TINY + overrides)
    out = _run(tmp_path, "central", overrides)
    task = build_task(config)
    model = task.new_module().to(memory_format=torch.channels_last)  # as the task trains (same float sums)
    load_params(model, task.initial_params(seed_for(config.seed, Stream.MODEL_INIT)))
    parts = [task.federation.hospital_arrays(h, "train") for h in range(4)]
    images = torch.from_numpy(np.concatenate([images for images, _ in parts]))
    labels = torch.from_numpy(np.concatenate([labels for _, labels in parts]))
    for round_index in (1, 2):
        generator = torch.Generator().manual_seed(seed_for(config.seed, Stream.LOCAL_TRAINING, round_index, 0))
        optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr, momentum=0.5)
        model.train()
        for _ in range(2):
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(labels), 16):
                batch = order[start : start + 16]
                optimizer.zero_grad()
                F.cross_entropy(model(images[batch]), labels[batch]).backward()
                optimizer.step()
    saved = torch.load(out / "model.pt", weights_only=True)
    for name, value in model.state_dict().items():
        if value.is_floating_point():  # (BatchNorm's step counters stay the global model's, as in FedAvg)
            torch.testing.assert_close(saved[name], value, rtol=1e-6, atol=1e-7)
    clients = pq.read_table(out / "clients.parquet").to_pylist()
    assert [(row["hospital"], row["samples"]) for row in clients] == [(0, len(labels)), (0, len(labels))]


def test_centralised_makes_the_federated_runs_sample_passes_round_by_round(tmp_path: Path) -> None:
    overrides = ["rounds=3", "sampling.clients_per_round=2", "train.epochs=1"]
    federated = pq.read_table(_run(tmp_path, "fedavg", overrides) / "clients.parquet").to_pandas()
    central = pq.read_table(_run(tmp_path, "central", [*overrides, "strategy=centralised"]) / "clients.parquet").to_pandas()
    cohorts = federated.groupby("round")["hospital"].apply(list)
    assert len(central) == 3 and len(set(map(tuple, cohorts))) > 1  # a different cohort in some round
    assert central["hospital"].tolist() == [cohort[0] for cohort in cohorts]  # the site: the cohort's first
    assert central["samples"].tolist() == federated.groupby("round")["samples"].sum().tolist()
    rounds = pq.read_table(tmp_path / "central" / "rounds.parquet").to_pandas()
    assert rounds["global_quadratic_kappa"].notna().all() and rounds["hospital_accuracy_mean"].notna().all()


@pytest.mark.parametrize(
    ("setting", "field"),
    [("train.epochs_mode=uniform", "train.epochs_mode"), ("compression={scheme: topk, fraction: 0.1}", "compression"),
     ("task=scheduling", "strategy.name")],
)
def test_centralised_refuses_what_it_cannot_honour_in_one_line(setting: str, field: str) -> None:
    extra = ["train.max_epochs=3"] if "epochs_mode" in setting else []
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as error:
        load_config(None, ["strategy=centralised", setting, *extra] if setting != "task=scheduling"
                    else ["task=scheduling", "strategy=centralised"])
    assert "\n" not in str(error.value)


def _local_only_rounds(task, config, rounds: int = 2):
    backend = InProcessBackend(task, build_strategy(config, task), Pipeline([]),
                               task.initial_params(seed_for(config.seed, Stream.MODEL_INIT)), config.seed, workers=2)
    schedule = RoundSchedule(config, task)
    outcomes = [run_round(backend, task, r, schedule.cohort(r), schedule.scored(r, schedule.cohort(r))) for r in range(1, rounds + 1)]
    return outcomes, backend.states


def test_local_only_never_mixes_hospitals() -> None:
    """Relabel hospital 1's data at random: hospital 1's model and scores change, the others' stay
    bitwise the same; each hospital is scored with its own model on its own test split, and there
    is no global model to score."""
    config = load_config(None, TINY + ["strategy=local_only"])
    task = build_task(config)
    outcomes, states = _local_only_rounds(task, config)
    federation = task.federation
    relabelled = federation.train_labels.copy()
    mine = np.concatenate([federation.train_parts[1], federation.test_parts[1]])
    relabelled[mine] = np.random.default_rng(0).integers(0, 3, mine.size)
    other = build_task(config)
    other.federation = replace(other.federation, reported_labels=relabelled)
    other_outcomes, other_states = _local_only_rounds(other, config)
    for hospital in (0, 2, 3):
        for name, array in states[hospital].strategy.items():
            np.testing.assert_array_equal(array, other_states[hospital].strategy[name])
        np.testing.assert_equal(outcomes[-1].hospital_scores[hospital], other_outcomes[-1].hospital_scores[hospital])
    assert any(not np.array_equal(a, other_states[1].strategy[n]) for n, a in states[1].strategy.items())
    for hospital, scores in outcomes[-1].hospital_scores.items():
        np.testing.assert_equal(scores, task.evaluate_hospital(hospital, states[hospital].strategy, None))
    assert outcomes[-1].global_metrics == {} and outcomes[-1].global_tables == {}


def test_local_only_rounds_table_has_hospital_means_and_no_global_scores(tmp_path: Path) -> None:
    out = _run(tmp_path, "local", ["rounds=1", "strategy=local_only"])
    row = pq.read_table(out / "rounds.parquet").to_pylist()[0]
    hospitals = pq.read_table(out / "hospital_eval.parquet").to_pandas()
    assert np.isnan(row["global_accuracy"]) and np.isnan(row["global_quadratic_kappa"])
    assert row["hospital_accuracy_mean"] == pytest.approx(hospitals["accuracy"].mean())
    assert row["hospital_quadratic_kappa_mean"] == pytest.approx(hospitals["quadratic_kappa"].mean())
    assert not (out / "confusion.parquet").exists()


@pytest.mark.ray
def test_centralised_on_ray_gives_the_in_process_bits(ray_cluster, tmp_path: Path) -> None:
    """One instruction a round, whatever the number of workers: the Ray pool runs the same site."""
    overrides = ["rounds=2", "strategy=centralised", "sampling.clients_per_round=3"]
    local = torch.load(_run(tmp_path, "local", overrides) / "model.pt", weights_only=True)
    ray_run = _run(tmp_path, "ray", [*overrides, "engine.backend=ray", "engine.workers=2"])
    remote = torch.load(ray_run / "model.pt", weights_only=True)
    assert all(torch.equal(local[name], remote[name]) for name in local)
    assert pq.read_table(ray_run / "confusion.parquet").num_rows == 2 * 2 * 9
