"""Secure aggregation: unmasking recovers the survivors' fixed-point sum bitwise, masked vectors
look uniform, dropouts are recovered from Shamir shares, and too few survivors fail the round."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedsim.config import load_config
from fedsim.engine.fixed_point import FixedPointSum
from fedsim.errors import ConfigError
from fedsim.pipeline.base import Pipeline
from fedsim.privacy.secagg import (
    MaskedSum,
    SecureAggregation,
    SecureAggregationConfig,
    neighbour_graph,
    reconstruct,
    share,
)
from fedsim.strategies.fedavg import FedAvg
from in_process import one_round
from toy_task import ToyTask, full_cohort


def _secure(threshold: int = 3, neighbours: int = 4, dropout: float = 0.0, seed: int = 5) -> SecureAggregation:
    return SecureAggregation(SecureAggregationConfig(threshold=threshold, neighbours=neighbours, dropout=dropout), seed)


def _contributions(n: int, size: int = 300) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return {h: {"a": rng.normal(size=(size // 3, 2)), "b": rng.normal(size=size // 3)} for h in range(n)}


def _plain(contributions: dict[int, dict[str, np.ndarray]], hospitals) -> FixedPointSum:
    total = FixedPointSum()
    for h in hospitals:
        total.add(contributions[h])
    return total


def test_round_with_secure_aggregation_is_bitwise_the_plain_round() -> None:
    task = ToyTask(num_hospitals=6)
    pipeline = Pipeline([], secure_aggregation=_secure(threshold=2, neighbours=2))
    plain, plain_reports, *_ = one_round(task, FedAvg(), full_cohort(task), workers=2)
    secure, reports, _, metrics = one_round(task, FedAvg(), full_cohort(task), workers=2, pipeline=pipeline)
    np.testing.assert_array_equal(secure["w"], plain["w"])
    assert metrics["pipeline_secagg_survivors"] == 6 and metrics["pipeline_secagg_failed"] == 0
    assert all(r.upload_bytes > p.upload_bytes for r, p in zip(reports, plain_reports))  # 64-bit words, a key, shares


def test_fedavg_with_dropouts_averages_the_survivors() -> None:
    task = ToyTask(num_hospitals=8)
    pipeline = Pipeline([], secure_aggregation=_secure(threshold=2, neighbours=4, dropout=0.3))
    broadcast, reports, _, metrics = one_round(task, FedAvg(), full_cohort(task), workers=2, pipeline=pipeline)
    survivors = [r.hospital for r in reports if not r.metrics["secagg_dropped"]]
    assert 0 < len(survivors) < 8 and metrics["pipeline_secagg_failed"] == 0
    from toy_task import first_round_updates

    updates, sizes = first_round_updates(task, 11), task.hospital_sizes().astype(np.float64)
    expected = sum(sizes[h] * updates[h] for h in survivors) / sizes[survivors].sum()
    np.testing.assert_allclose(broadcast["w"], expected, atol=1e-6)
    assert metrics["pipeline_secagg_weight_share"] == pytest.approx(sizes[survivors].sum() / sizes.sum())


def test_masked_partial_sums_are_uniform_words_and_unmask_exactly() -> None:
    secure, contributions = _secure(), _contributions(8, size=3000)
    cohort = list(range(8))
    partials = [MaskedSum(), MaskedSum()]
    for h in cohort:  # two workers pre-summing four hospitals each
        assert secure.add_masked(partials[h % 2], contributions[h], h, cohort, round_index=1)
    alone = MaskedSum()  # one hospital's masked vector on its own
    secure.add_masked(alone, contributions[0], 0, cohort, round_index=1)
    plain = _plain(contributions, cohort)
    for partial in [*partials, alone]:  # what the server receives: no resemblance to the plain sum, uniform 64-bit words
        words = np.concatenate([partial.totals[n].ravel() for n in sorted(partial.totals)]).view(np.uint64)
        assert stats.kstest(words / 2.0**64, "uniform").pvalue > 1e-3
        high_bytes = (words >> np.uint64(56)).astype(np.int64)
        assert stats.chisquare(np.bincount(high_bytes, minlength=256)).pvalue > 1e-3
    total, metrics = secure.unmask(partials, cohort, 1)
    for name in plain.totals:
        np.testing.assert_array_equal(total.totals[name], plain.totals[name])
    assert metrics["secagg_dropped"] == 0


def test_dropouts_after_masking_are_recovered_exactly_from_shares() -> None:
    secure, contributions = _secure(threshold=3, neighbours=6, dropout=0.25), _contributions(10)
    cohort = list(range(10))
    partial = MaskedSum()
    survived = [h for h in cohort if secure.add_masked(partial, contributions[h], h, cohort, round_index=3)]
    assert len(survived) == 7  # the seeded dropouts of this round: 3 of 10
    total, metrics = secure.unmask([partial], cohort, 3)
    plain = _plain(contributions, survived)
    for name in plain.totals:
        np.testing.assert_array_equal(total.totals[name], plain.totals[name])
    assert metrics["secagg_dropped"] == 10 - len(survived)


def test_too_few_surviving_share_holders_fail_the_round_and_keep_the_model() -> None:
    task = ToyTask(num_hospitals=6)
    pipeline = Pipeline([], secure_aggregation=_secure(threshold=5, neighbours=4, dropout=0.6))
    start = task.initial_params(0)
    broadcast, reports, _, metrics = one_round(task, FedAvg(), full_cohort(task), pipeline=pipeline)
    assert metrics["pipeline_secagg_failed"] == 1.0
    np.testing.assert_array_equal(broadcast["w"], start["w"])
    assert sum(r.metrics["secagg_dropped"] for r in reports) == metrics["pipeline_secagg_dropped"] >= 1


def test_shamir_needs_threshold_shares_and_graph_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    secret = int.from_bytes(rng.bytes(32), "little")
    shares = share(secret, list(range(7)), 4, rng)
    assert reconstruct({h: shares[h] for h in (0, 3, 5, 6)}) == secret
    assert reconstruct({h: shares[h] for h in (0, 3, 5)}) != secret
    graph = neighbour_graph(list(range(20)), 6, run_seed=3, round_index=1)
    assert all(len(n) == 6 and all(h in graph[j] for j in n) for h, n in graph.items())


def test_secure_aggregation_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="threshold: expected at most neighbours"):
        load_config(None, ["secure_aggregation={threshold: 9, neighbours: 4}"])
    with pytest.raises(ConfigError, match="secure_aggregation: strategy fedmrl is not supported"):
        load_config(None, ["strategy=fedmrl", "secure_aggregation={threshold: 2, neighbours: 4}"])
    with pytest.raises(ConfigError, match="cannot combine with secure_aggregation"):
        load_config(None, ["compression={scheme: quantize}", "secure_aggregation={threshold: 2, neighbours: 4}"])


def test_scheduling_dqn_federates_with_central_dp_and_secure_aggregation(tmp_path) -> None:
    """Both tasks: the federated DQN runs with DP noise on the unmasked sum and logs epsilon."""
    import fedsim
    from test_scheduling_simulation import TINY

    config = load_config(None, [*TINY, "scheduling.hospitals=4", "engine.backend=in_process", "engine.workers=2",
                                "privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0}",
                                "secure_aggregation={threshold: 2, neighbours: 2}"])
    rounds = fedsim.run(config, out=tmp_path / "run").rounds
    assert rounds["round"].tolist() == [1, 2] and (rounds["pipeline_secagg_failed"] == 0).all()
    assert rounds["epsilon"].is_monotonic_increasing and rounds["epsilon"].iloc[0] > 0


def test_a_failed_round_is_recorded_and_stops_the_run_when_configured(tmp_path, capsys) -> None:
    import fedsim

    settings = ["rounds=3", "data.hospitals=3", "data.source.train_samples=60", "data.source.test_samples=20",
                "data.source.image_size=8", "engine.backend=in_process", "engine.workers=1", "train.epochs=1"]
    failing = "secure_aggregation={threshold: 3, neighbours: 2, dropout: 0.9, on_failure: %s}"
    stopped = fedsim.run(load_config(None, [*settings, failing % "stop"]), out=tmp_path / "stop").rounds
    assert stopped["round"].tolist() == [1] and stopped["pipeline_secagg_failed"].tolist() == [1.0]
    assert "round 1 had too few survivors to unmask; stopped" in capsys.readouterr().err
    continued = fedsim.run(load_config(None, [*settings, failing % "continue"]), out=tmp_path / "continue").rounds
    assert continued["round"].tolist() == [1, 2, 3] and continued["pipeline_secagg_failed"].iloc[0] == 1.0
