"""The update pipeline: norm clipping, stage state held by the engine, server halves, and that
stages compose with strategies (through the engine's round protocol, in-process)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest

from fedsim.config import load_config
from fedsim.pipeline.base import HospitalContext, Pipeline, StageConfig, UpdateStage
from fedsim.pipeline.clipping import NormClip, update_norm
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.scaffold import Scaffold
from in_process import SEED, one_round
from toy_task import ToyTask, first_round_updates, full_cohort


def test_clipping_bounds_every_update_and_logs_the_norm_before_it() -> None:
    task = ToyTask(num_hospitals=5)
    updates = first_round_updates(task, SEED)
    norms = [float(np.linalg.norm(u)) for u in updates]
    bound = float(np.median(norms))  # some hospitals clipped, some not
    broadcast, reports, _, _ = one_round(task, FedAvg(), full_cohort(task), pipeline=Pipeline([NormClip(bound)]))
    assert [r.metrics["update_norm"] for r in reports] == pytest.approx(norms, rel=1e-6)
    assert [r.metrics["clipped"] for r in reports] == [float(n > bound) for n in norms]
    p = task.hospital_sizes() / task.hospital_sizes().sum()
    clipped = [u * min(1.0, bound / n) for u, n in zip(updates, norms)]
    assert all(np.linalg.norm(c) <= bound * (1 + 1e-12) for c in clipped)
    np.testing.assert_allclose(broadcast["w"], sum(pk * c for pk, c in zip(p, clipped)), atol=1e-6)


def test_clipping_leaves_small_updates_bitwise_alone() -> None:
    task = ToyTask(num_hospitals=4)
    plain, *_ = one_round(task, FedAvg(), full_cohort(task))
    loose, *_ = one_round(task, FedAvg(), full_cohort(task), pipeline=Pipeline([NormClip(1e6)]))
    np.testing.assert_allclose(loose["w"], plain["w"], rtol=0, atol=1e-7)


def test_clipping_composes_with_scaffold_on_the_model_delta() -> None:
    task = ToyTask(num_hospitals=3)
    strategy = Scaffold(local_lr=0.5, server_lr=1.0, num_hospitals=3)
    broadcast, reports, *_ = one_round(task, strategy, full_cohort(task), pipeline=Pipeline([NormClip(0.1)]))
    moved = np.linalg.norm(broadcast["w"])  # SCAFFOLD's x moves by the mean (clipped) update
    assert moved <= 0.1 + 1e-9 and all(r.metrics["clipped"] == 1.0 for r in reports)


class CountingConfig(StageConfig):
    stage: Literal["test_counting"] = "test_counting"

    def build(self, config, task) -> "Counting":
        return Counting()


class Counting(UpdateStage):
    """Keeps per-hospital state (its count of rounds) and halves the sum on the server."""

    keeps_hospital_state = True

    def hospital(self, update, context: HospitalContext, state: Any):
        count = (state or 0) + 1
        return update, count, {"stage_rounds": float(count), "stage_seed": float(context.seed % 1000)}

    def server(self, total, context):
        return {name: value / 2 for name, value in total.items()}, {"halved": 1.0}


def test_stage_state_is_engine_held_and_the_server_half_runs_on_the_sum() -> None:
    task = ToyTask(num_hospitals=4)
    pipeline = Pipeline([Counting()])
    plain, *_ = one_round(task, FedAvg(), full_cohort(task))
    first, reports, states, metrics = one_round(task, FedAvg(), full_cohort(task), pipeline=pipeline)
    np.testing.assert_allclose(first["w"], plain["w"] / 2, atol=1e-7)
    assert [r.metrics["stage_rounds"] for r in reports] == [1.0] * 4 and metrics["pipeline_halved"] == 1.0
    assert len({r.metrics["stage_seed"] for r in reports}) > 1  # a seed per hospital
    _, again, second_states, _ = one_round(task, FedAvg(), full_cohort(task, [0, 2]), states=states, pipeline=pipeline)
    assert [r.metrics["stage_rounds"] for r in again] == [2.0, 2.0]
    assert second_states[1].stages == (1,) and second_states[2].stages == (2,)


def test_pipeline_config_is_validated_by_each_stage_model() -> None:
    config = load_config(None, ["pipeline=[{stage: clip, max_norm: 0.5}, {stage: test_counting}]"])
    assert [stage.stage for stage in config.pipeline] == ["clip", "test_counting"]
    with pytest.raises(ValueError, match="pipeline.0.max_norm"):
        load_config(None, ["pipeline=[{stage: clip, max_norm: 0}]"])
    with pytest.raises(ValueError, match="pipeline.0.stage: unknown update stage 'nope'"):
        load_config(None, ["pipeline=[{stage: nope}]"])
    assert update_norm({"a": np.array([3.0]), "b": np.array([4.0])}) == 5.0
