"""Update compression: the quantiser is unbiased on its grid, top-k keeps its residual per
hospital between that hospital's rounds, and the bytes sent are what the encoding needs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.pipeline.base import HospitalContext, Pipeline
from fedsim.privacy.compression import Quantize, TopK, quantize
from fedsim.privacy.dp import CentralDP
from fedsim.privacy.stages import section_stages
from fedsim.strategies.fedavg import FedAvg
from in_process import one_round
from toy_task import ToyTask, full_cohort


def test_quantiser_is_unbiased_and_on_a_grid_of_two_to_the_b_levels() -> None:
    values = np.random.default_rng(0).normal(size=50)
    rng = np.random.default_rng(1)
    draws = np.array([quantize(values, 2, rng) for _ in range(20_000)])
    step = (values.max() - values.min()) / 3
    assert len(np.unique(np.round((draws - values.min()) / step, 9))) == 4
    # each entry's mean over 20,000 draws is within 4 standard errors of the entry
    spread = np.sqrt((values - values.min()) % step * (step - (values - values.min()) % step))
    assert np.all(np.abs(draws.mean(axis=0) - values) <= 4 * spread / np.sqrt(20_000) + 1e-12)
    assert np.all(draws.min(axis=0) >= values.min() - 1e-12) and np.all(draws.max(axis=0) <= values.max() + 1e-12)


def test_topk_error_feedback_residual_is_carried_between_a_hospitals_rounds() -> None:
    task = ToyTask(num_hospitals=3)
    pipeline = Pipeline([TopK(fraction=0.4)])  # 2 of 5 entries
    broadcast, reports, states, _ = one_round(task, FedAvg(), full_cohort(task), pipeline=pipeline)
    first = states[0].stages[0]
    assert np.count_nonzero(first["w"]) == 3  # what was not sent stays as the residual
    assert all(r.upload_bytes == 2 * 8 for r in reports)  # 2 entries, float32 value + int32 index each
    start = broadcast
    _, again, second_states, _ = one_round(task, FedAvg(), full_cohort(task, [0]), broadcast=start, states=states, pipeline=pipeline)
    from fedsim.seeding import Stream, seed_for

    delta = task.local_update(0, start["w"], seed_for(11, Stream.LOCAL_TRAINING, 1, 0)).astype(np.float64) - start["w"]
    corrected = delta + first["w"]
    kept = np.argsort(-np.abs(corrected))[:2]
    sent = np.zeros(5)
    sent[kept] = corrected[kept]
    np.testing.assert_allclose(second_states[0].stages[0]["w"], corrected - sent, atol=1e-12)
    assert second_states[1].stages == states[1].stages  # hospitals not sampled keep their residual


def test_quantised_upload_counts_bits_not_floats() -> None:
    task = ToyTask(num_hospitals=2, dim=40)
    _, reports, _, _ = one_round(task, FedAvg(), full_cohort(task), pipeline=Pipeline([Quantize(bits=3)]))
    assert all(r.upload_bytes == math.ceil(40 * 3 / 8) + 8 for r in reports)
    _, plain, _, _ = one_round(task, FedAvg(), full_cohort(task))
    assert all(r.upload_bytes == 40 * 4 for r in plain)


def test_central_dp_clips_after_compression_so_what_leaves_is_bounded() -> None:
    config = load_config(None, ["compression={scheme: quantize, bits: 1}", "model.name=small_cnn_gn",
                                "privacy={mechanism: central, clip_norm: 0.1, noise_multiplier: 1.0}"])
    task = ToyTask(num_hospitals=2)
    stages = section_stages(config, task)
    assert [type(s) for s in stages] == [Quantize, CentralDP]
    context = HospitalContext(1, 0, weight=1.0, seed=3, setting=0.1)  # central DP's C, as the server sends it
    update = {"w": np.random.default_rng(0).normal(size=1000)}
    pipeline_update = update
    for stage in stages:
        pipeline_update, _, _ = stage.hospital(pipeline_update, context, None)
    m = config.clients_per_round()
    assert np.linalg.norm(pipeline_update["w"]) * m <= 0.1 * (1 + 1e-12)


def test_compression_refuses_strategies_it_cannot_rebuild() -> None:
    with pytest.raises(ConfigError, match="compression.scheme: strategy scaffold is not supported"):
        load_config(None, ["strategy=scaffold", "compression={scheme: topk, fraction: 0.1}"])
    with pytest.raises(ConfigError, match="compression.fraction"):
        load_config(None, ["compression={scheme: topk, fraction: 0}"])
