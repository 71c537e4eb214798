"""Adaptive clipping (Andrew et al. 2021): the clip norm follows a quantile of the update norms by
the geometric rule, its clipped count is accounted (effective noise multiplier), it reaches the
hospitals each round, is checkpointed so a resumed run keeps its bits, and bad settings are refused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedsim.checkpoint import load_checkpoint
from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.pipeline.base import Pipeline
from fedsim.privacy.accounting import effective_noise_multiplier, rdp, update_noise_multiplier
from fedsim.privacy.dp import AdaptiveClipping, CentralDP
from fedsim.privacy.stages import section_stages
from fedsim.protocol import LocalResult
from fedsim.seeding import Stream, rng_for
from fedsim.simulation import Simulation
from fedsim.strategies.fedavg import FedAvg
from in_process import SEED, one_round
from test_faults import SMALL, assert_same_run, interrupted_in_round
from toy_task import ToyTask, full_cohort


class FixedNormTask(ToyTask):
    """Hospital h's update is a vector of norm h + 1 (hand-built norms 1, 2, ..., N)."""

    def train(self, hospital, params, plan, state, seed):
        direction = np.zeros(self.targets.shape[1], dtype=np.float32)
        direction[0] = hospital + 1.0
        return LocalResult({"w": params["w"] + direction, "count": params["count"]}, int(self.sizes[hospital]), 1, {}, None)


def _adaptive_stage(clip: float, hospitals: int, quantile: float = 0.5, rate: float = 0.2, count_noise: float = 1e-3) -> CentralDP:
    """Central DP with (next to) no noise: sigma_b tiny, so the count is the true one."""
    return CentralDP(clip, 1e-6, float(hospitals), run_seed=SEED, adaptive=AdaptiveClipping(quantile, rate, count_noise))


def test_one_step_is_the_geometric_rule_on_the_noised_unclipped_fraction() -> None:
    task = FixedNormTask(num_hospitals=10)
    stage = _adaptive_stage(clip=3.5, hospitals=10, count_noise=0.7)
    _, reports, _, metrics = one_round(task, FedAvg(), full_cohort(task), pipeline=Pipeline([stage]))
    # norms 1..10 against C = 3.5: three unclipped; sum of (b_k - 1/2) = 3 - 5
    noise = rng_for(SEED, Stream.CLIP_COUNT_NOISE, 1).normal(0.0, 0.7)
    fraction = (3 - 5 + noise) / 10 + 0.5
    assert metrics["pipeline_unclipped_fraction"] == pytest.approx(fraction, abs=1e-9)
    assert metrics["pipeline_clip_norm"] == 3.5  # the C this round clipped with
    assert stage.clip_norm == pytest.approx(3.5 * math.exp(-0.2 * (fraction - 0.5)), rel=1e-12)
    assert [r.metrics["clipped"] for r in reports] == [0.0] * 3 + [1.0] * 7
    assert all("unclipped" not in r.metrics for r in reports)  # the bit reaches the server only summed


@pytest.mark.parametrize(("quantile", "low", "high"), [(0.5, 5.0, 6.0), (0.8, 8.0, 9.0), (0.2, 2.0, 3.0)])
def test_clip_norm_moves_to_the_target_quantile_of_known_norms(quantile: float, low: float, high: float) -> None:
    """Norms 1..10: C settles where the fraction of norms <= C is the quantile, from above and below."""
    task = FixedNormTask(num_hospitals=10)
    for start in (0.2, 40.0):
        stage = _adaptive_stage(clip=start, hospitals=10, quantile=quantile)
        backend_pipeline = Pipeline([stage])
        broadcast = None
        for _ in range(80):
            broadcast, *_ = one_round(task, FedAvg(), full_cohort(task), broadcast=broadcast, pipeline=backend_pipeline)
        assert low <= stage.clip_norm < high, (start, stage.clip_norm)


def test_the_clip_norm_reaches_the_hospitals_with_the_instructions() -> None:
    task = FixedNormTask(num_hospitals=4)
    stage = _adaptive_stage(clip=1.0, hospitals=4)
    stage.clip_norm = 2.5  # the server's current C, not the configured one
    broadcast, reports, _, _ = one_round(task, FedAvg(), full_cohort(task), pipeline=Pipeline([stage]))
    assert [r.metrics["clipped"] for r in reports] == [0.0, 0.0, 1.0, 1.0]  # norms 1, 2 <= 2.5 < 3, 4


def test_effective_noise_multiplier_composes_like_the_two_gaussian_mechanisms() -> None:
    """z = (z_update^-2 + (2 sigma_b)^-2)^-1/2: the RDP of the update sum (z_update) plus that of the
    count (sensitivity 1/2, std sigma_b: multiplier 2 sigma_b) is the RDP of one mechanism at z."""
    z, count_noise = 1.1, 0.9
    z_update = update_noise_multiplier(z, count_noise)
    assert z_update > z
    assert effective_noise_multiplier(z_update, count_noise) == pytest.approx(z, rel=1e-12)
    np.testing.assert_allclose(rdp(1.0, z_update, 1) + rdp(1.0, 2 * count_noise, 1), rdp(1.0, z, 1), rtol=1e-9)
    with pytest.raises(ValueError, match="count_noise: expected more than noise_multiplier / 2"):
        update_noise_multiplier(1.0, 0.5)


def _adaptive_config(*extra: str, adaptive: str = "{target_quantile: 0.5, learning_rate: 0.2}"):
    return load_config(None, ["privacy={mechanism: central, clip_norm: 0.5, noise_multiplier: 0.3, adaptive_clipping: "
                              + adaptive + "}", "model.name=small_cnn_gn", *extra])


def test_the_stage_uses_the_update_share_of_the_run_noise_multiplier() -> None:
    config = _adaptive_config("data.hospitals=40", "sampling.clients_per_round=20")
    (stage,) = section_stages(config, ToyTask(num_hospitals=40))
    assert stage.adaptive.count_noise == pytest.approx(20 / 20)  # the paper's default, m / 20
    assert stage.noise_multiplier == pytest.approx(update_noise_multiplier(0.3, 1.0))
    assert effective_noise_multiplier(stage.noise_multiplier, stage.adaptive.count_noise) == pytest.approx(0.3)


@pytest.mark.parametrize(("overrides", "message"), [
    (["privacy={mechanism: local, clip_norm: 1.0, noise_multiplier: 1.0, adaptive_clipping: {}}"],
     "privacy: adaptive_clipping: only with mechanism central, got local"),
    (["privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0, adaptive_clipping: {target_quantile: 1.5}}"],
     "privacy.adaptive_clipping.target_quantile"),
    (["privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0, adaptive_clipping: {learning_rate: 0}}"],
     "privacy.adaptive_clipping.learning_rate"),
    (["privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0, adaptive_clipping: {count_nois: 1}}"],
     "count_nois"),
], ids=["local", "quantile", "rate", "typo"])
def test_bad_adaptive_clipping_settings_are_refused_in_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_config(None, overrides + ["model.name=small_cnn_gn"])
    assert "\n" not in str(error.value)


def test_a_count_noise_too_small_for_the_noise_multiplier_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    config = _adaptive_config(*SMALL, adaptive="{count_noise: 0.1}")  # 2 * 0.1 < 0.3
    with pytest.raises(ConfigError, match=r"privacy.adaptive_clipping.count_noise: expected more than noise_multiplier / 2 = 0.15"):
        Simulation(config, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_the_clip_norm_is_logged_checkpointed_and_resumed_to_the_same_bits(tmp_path: Path, monkeypatch) -> None:
    overrides = [*SMALL, "rounds=4", "engine.backend=in_process", "engine.checkpoint_every=1", "sampling.clients_per_round=8"]
    config = _adaptive_config(*overrides, adaptive="{target_quantile: 0.3, learning_rate: 0.5, count_noise: 1.0}")
    Simulation(config, tmp_path / "clean", quiet=True).run()
    rounds = pq.read_table(tmp_path / "clean" / "rounds.parquet").to_pydict()
    clip = rounds["pipeline_clip_norm"]
    assert clip[0] == 0.5 and len(set(clip)) == 4  # C moves every round
    fractions = np.array(rounds["pipeline_unclipped_fraction"])
    np.testing.assert_allclose(clip[1:], np.array(clip[:-1]) * np.exp(-0.5 * (fractions[:-1] - 0.3)), rtol=1e-12)

    with interrupted_in_round(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        Simulation(config, tmp_path / "resumed", quiet=True).run()
    checkpoint = load_checkpoint(tmp_path / "resumed")
    assert checkpoint.round_index == 2 and checkpoint.server["pipeline"][0]["clip_norm"] == clip[2]
    Simulation.resume(tmp_path / "resumed", quiet=True).run()
    assert_same_run(tmp_path / "clean", tmp_path / "resumed")
