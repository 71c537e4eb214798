"""Vectorised cohorts (engine.vectorized_hospitals) train each hospital as the per-hospital loop does.

Tolerances (also in fedsim.tasks.vectorized and the README):
- one local training (uneven sizes and epochs, every LocalPlan term, BatchNorm and GroupNorm):
  parameters and buffers allclose rtol 1e-3, atol 1e-4 (measured: GroupNorm within 1e-7, BatchNorm
  with SCAFFOLD's correction 6e-5, as between the loop's own channels-last and contiguous
  layouts); training loss rtol 1e-5; steps equal;
- a few rounds of a run (FedAvg, FedProx with momentum and weight decay): steps equal, first-round
  training losses rtol 1e-5, and after 3 rounds every global parameter within atol 5e-3 and every
  training loss within atol 5e-3. A vmapped convolution sums in another order than the loop's
  channels-last one, and ReLU / max-pool kinks amplify that float32 rounding from round to round
  (the loop itself drifts as much between channels-last and contiguous layouts); the first-round
  check is the tight one that catches a wrong batch order, objective or update.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedsim
from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.models import MODELS
from fedsim.protocol import LocalPlan
from fedsim.tasks.base import TrainJob
from fedsim.tasks.factory import build_task

SMALL = [
    "data.source={kind: synthetic, classes: 3, train_samples: 160, test_samples: 40}",
    "data.hospitals=4",
    "data.partition={scheme: dirichlet, alpha: 1.0}",  # uneven sizes: several groups per step
    "train.batch_size=8",
    "train.lr=0.01",
]


def _plans(params: dict[str, np.ndarray], names: list[str]) -> dict[str, list[LocalPlan]]:
    rng = np.random.default_rng(0)
    correction = {name: 0.01 * rng.standard_normal(params[name].shape).astype(np.float32) for name in names}
    return {
        "plain": [LocalPlan(epochs=1 + h % 2) for h in range(4)],
        "proximal": [LocalPlan(epochs=2, mu=0.5 * (h % 2)) for h in range(4)],  # mu 0 and 0.5 in one group
        "correction": [LocalPlan(epochs=1, gradient_correction=correction if h % 3 else None) for h in range(4)],
        "fairness": [LocalPlan(epochs=1, fairness_lambda=0.5, global_loss=0.7 if h % 2 else float("nan")) for h in range(4)],
    }


@pytest.mark.parametrize("model", ["small_cnn", "small_cnn_gn"])
def test_a_vectorised_group_trains_each_hospital_as_the_loop_does(model: str) -> None:
    task = build_task(load_config(None, SMALL + [f"model.name={model}"]), None)
    start = task.initial_params(0)
    names = [name for name, _ in task.new_module().named_parameters()]
    for kind, plans in _plans(start, names).items():
        jobs = [TrainJob(h, start, plan, None, 100 + h) for h, plan in enumerate(plans)]
        loop = [task.train(job.hospital, job.params, job.plan, None, job.seed) for job in jobs]
        vectorized = task.train_group(jobs)
        assert len({len(part) for part in task.federation.train_parts}) > 1
        for one, other in zip(loop, vectorized):
            assert (one.steps, one.num_samples) == (other.steps, other.num_samples), kind
            assert other.metrics["train_loss"] == pytest.approx(one.metrics["train_loss"], rel=1e-5), kind
            assert other.metrics["local_accuracy"] == one.metrics["local_accuracy"], kind
            assert set(other.params) == set(one.params)
            for name in one.params:
                assert other.params[name].dtype == one.params[name].dtype, name
                np.testing.assert_allclose(other.params[name], one.params[name], rtol=1e-3, atol=1e-4, err_msg=f"{kind} {name}")


def _run(tmp_path, vectorized: int, extra: list[str]):
    config = load_config(None, SMALL + [
        "rounds=3", "train.epochs=1", "eval.every=3", "engine.backend=in_process", "engine.workers=2",
        f"engine.vectorized_hospitals={vectorized}", *extra,
    ])
    return fedsim.run(config, out=tmp_path / f"run{vectorized}")


@pytest.mark.parametrize("strategy", [["strategy=fedavg"], ["strategy={name: fedprox, mu: 0.1}", "train.momentum=0.9", "train.weight_decay=0.001"]])
def test_a_vectorised_run_matches_the_per_hospital_loop_over_rounds(tmp_path, strategy: list[str]) -> None:
    loop, vectorized = _run(tmp_path, 0, strategy), _run(tmp_path, 2, strategy)  # 2: groups of 2 and 1 per worker
    ours, theirs = (result.clients.sort_values(["round", "hospital"]) for result in (loop, vectorized))
    assert len(ours) == 12
    np.testing.assert_array_equal(ours.steps.values, theirs.steps.values)
    first = ours["round"].values == 1
    np.testing.assert_allclose(theirs.train_loss.values[first], ours.train_loss.values[first], rtol=1e-5)
    np.testing.assert_allclose(theirs.train_loss.values, ours.train_loss.values, atol=5e-3)
    one, other = (torch.load(result.run_dir / "model.pt") for result in (loop, vectorized))
    for name in one:
        np.testing.assert_allclose(other[name].numpy(), one[name].numpy(), atol=5e-3, err_msg=name)


def test_vectorised_training_is_refused_where_it_does_not_apply() -> None:
    with pytest.raises(ConfigError, match="^engine.vectorized_hospitals: DP-SGD"):
        load_config(None, ["engine.vectorized_hospitals=4", "model.name=small_cnn_gn",
                           "privacy={mechanism: dp_sgd, clip_norm: 1.0, noise_multiplier: 1.0}"])
    with pytest.raises(ConfigError, match="^engine.vectorized_hospitals: federated dropout"):
        load_config(None, ["engine.vectorized_hospitals=4", "compression={scheme: federated_dropout, fraction: 0.25}"])
    with pytest.raises(ConfigError, match="^engine.vectorized_hospitals: partial work"):
        load_config(None, ["engine.vectorized_hospitals=4", "systems={deadline: 2, stragglers: partial}"])
    with pytest.raises(ConfigError, match="^engine.vectorized_hospitals: strategy fedrep trains the head and then the body"):
        load_config(None, ["engine.vectorized_hospitals=4", "strategy=fedrep"])
    with pytest.raises(ConfigError, match="^engine.vectorized_hospitals needs vectorised local training"):
        load_config(None, ["task=scheduling", "engine.vectorized_hospitals=4"])
    with pytest.raises(ConfigError, match="engine.vectorized_hospitals: Input should be greater than or equal to 0"):
        load_config(None, ["engine.vectorized_hospitals=-1"])


def test_a_model_vmap_cannot_train_is_refused_before_any_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout draws random numbers, which vmap refuses by default: one line, at build time."""
    monkeypatch.setitem(MODELS._entries, "cnn_with_dropout", lambda channels, classes: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(channels * 28 * 28, classes)))  # registered for this test only
    config = load_config(None, SMALL + ["model.name=cnn_with_dropout", "engine.vectorized_hospitals=2"])
    with pytest.raises(ConfigError, match=r"^engine.vectorized_hospitals: model cnn_with_dropout cannot be trained under torch.func.vmap \(.+\); set"):
        build_task(config, None)
