"""Differential privacy: clipping, the noise the formulas promise, Opacus' accounting, target
epsilon calibration, the budget stop, Poisson sampling, DP-SGD through Opacus, and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.accountants.rdp import RDPAccountant

from fedsim.config import load_config
from fedsim.engine.sampling import poisson_hospitals
from fedsim.errors import ConfigError
from fedsim.pipeline.base import HospitalContext, Pipeline, ServerContext
from fedsim.pipeline.clipping import update_norm
from fedsim.privacy.accounting import ORDERS
from fedsim.privacy.dp import CentralDP, LocalDP
from fedsim.privacy.dp_sgd import DPSGD
from fedsim.privacy.ledger import PrivacyLedger
from fedsim.protocol import Cohort
from fedsim.seeding import Stream, rng_for
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fedavgm import FedAvgM
from in_process import SEED, one_round
from toy_task import ToyTask, first_round_updates, full_cohort


def _dp_config(*extra: str, mechanism: str = "central", budget: str = "noise_multiplier: 1.0"):
    return load_config(None, [f"privacy={{mechanism: {mechanism}, clip_norm: 1.0, {budget}}}", "model.name=small_cnn_gn", *extra])


def test_central_dp_is_the_fixed_denominator_sum_of_clipped_updates_plus_the_formula_noise() -> None:
    """w_{t+1} = w_t + (1/m)[sum_k clip_C(delta_k) + N(0, sigma^2 C^2)], whatever the strategy's weights."""
    task = ToyTask(num_hospitals=5)
    clip, sigma, m = 0.5, 0.3, 4.0
    stage = CentralDP(clip, sigma, m, run_seed=SEED)
    broadcast, reports, _, metrics = one_round(task, FedAvg(), full_cohort(task), pipeline=Pipeline([stage]))
    clipped = [u * min(1.0, clip / np.linalg.norm(u)) for u in first_round_updates(task, SEED)]
    assert all(np.linalg.norm(c) <= clip * (1 + 1e-12) for c in clipped)
    assert any(r.metrics["clipped"] == 1.0 for r in reports)
    noise = rng_for(SEED, Stream.SERVER_NOISE, 1).normal(0.0, sigma * clip / m, size=5)
    np.testing.assert_allclose(broadcast["w"], sum(clipped) / m + noise, atol=1e-6)
    assert metrics["pipeline_noise_std"] == pytest.approx(sigma * clip / m)
    # FedAvgM steps by the summed update: the same noisy mean update reaches it
    moved, *_ = one_round(task, FedAvgM(server_lr=1.0, momentum=0.0), full_cohort(task), pipeline=Pipeline([stage]))
    np.testing.assert_allclose(moved["w"], broadcast["w"], atol=1e-6)


def test_hospital_halves_clip_to_c_and_local_noise_has_the_formula_std() -> None:
    rng = np.random.default_rng(0)
    update = {"a": rng.normal(size=(300, 100)), "b": rng.normal(size=20_000)}
    context = HospitalContext(round_index=1, hospital=3, weight=0.25, seed=7, setting=2.0)  # the server's C
    sent, _, metrics = CentralDP(2.0, 1.0, expected_cohort=8.0, run_seed=0).hospital(update, context, None)
    assert update_norm(sent) * 8.0 * 0.25 == pytest.approx(2.0) and metrics["clipped"] == 1.0
    clip, sigma = 2.0, 0.7
    noisy, _, _ = LocalDP(clip, sigma).hospital(update, context, None)
    scale = clip / update_norm(update)
    noise = np.concatenate([(noisy[n] - update[n] * scale).ravel() for n in update])
    # 50,000 draws: the sample std is within 2% of sigma * C with overwhelming probability
    assert np.std(noise) == pytest.approx(sigma * clip, rel=0.02) and abs(np.mean(noise)) < 0.02


def test_server_noise_std_equals_sigma_c_over_m() -> None:
    sigma, clip, m = 1.3, 0.8, 10.0
    total = {"w": np.zeros(100_000), "running_mean": np.zeros(10)}
    context = ServerContext(round_index=4, instructions=[], weight=1.0, sums={}, start={}, sums_updates=False)
    noisy, metrics = CentralDP(clip, sigma, m, run_seed=1).server(total, context)
    assert np.std(noisy["w"]) == pytest.approx(sigma * clip / m, rel=0.02)
    assert not np.any(noisy["running_mean"])  # only trained entries are noised
    again, _ = CentralDP(clip, sigma, m, run_seed=1).server(total, context)
    np.testing.assert_array_equal(again["w"], noisy["w"])  # seeded by run and round


def test_epsilon_equals_opacus_rdp_accountant() -> None:
    config = _dp_config("data.hospitals=100", "sampling.clients_per_round=10", "sampling.scheme=poisson", "rounds=50")
    ledger = PrivacyLedger(config, np.full(100, 40))
    cohort = Cohort(np.arange(10), np.full(10, 40), np.ones(10, dtype=np.int64))
    for _ in range(50):
        spent = ledger.record(cohort)
    accountant = RDPAccountant()
    for _ in range(50):
        accountant.step(noise_multiplier=1.0, sample_rate=0.1)
    assert spent["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5, alphas=list(ORDERS)), rel=1e-12)
    assert spent["delta"] == 1e-5


@pytest.mark.parametrize("mechanism", ["central", "local", "dp_sgd"])
def test_target_epsilon_calibrates_the_noise_within_one_percent(mechanism: str) -> None:
    config = _dp_config("data.hospitals=20", "sampling.clients_per_round=5", "rounds=30", mechanism=mechanism, budget="target_epsilon: 3.0")
    sizes = np.random.default_rng(0).integers(20, 200, size=20)
    ledger = PrivacyLedger(config, sizes)
    assert 0.99 * 3.0 <= ledger.worst_case_epsilon(ledger.noise_multiplier) <= 3.0
    assert ledger.worst_case_epsilon(ledger.noise_multiplier * 0.98) > 3.0  # the smallest such noise


def test_the_run_stops_cleanly_when_the_budget_would_be_exceeded(tmp_path, capsys) -> None:
    import fedsim

    settings = ["rounds=6", "data.hospitals=3", "data.source.train_samples=60", "data.source.test_samples=20",
                "data.source.image_size=8", "engine.backend=in_process", "engine.workers=1", "train.epochs=1"]
    ledger = PrivacyLedger(_dp_config(*settings), np.full(3, 20))
    cohort = Cohort(np.arange(3), np.full(3, 20), np.ones(3, dtype=np.int64))
    epsilons = [ledger.record(cohort)["epsilon"] for _ in range(6)]
    budget = (epsilons[2] + epsilons[3]) / 2  # affords three rounds
    config = _dp_config(*settings, budget=f"noise_multiplier: 1.0, target_epsilon: {budget}")
    result = fedsim.run(config, out=tmp_path / "run")
    rounds = result.rounds
    assert rounds["round"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(rounds["epsilon"], epsilons[:3], rtol=1e-12)
    assert "stopped after round 3" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.pt").is_file()


def test_poisson_sampling_is_seeded_and_has_the_configured_rate() -> None:
    draws = [poisson_hospitals(5, r, 200, 0.1) for r in range(1, 301)]
    sizes = np.array([len(d) for d in draws])
    assert abs(sizes.mean() - 20) < 1.0 and sizes.std() > 2  # Binomial(200, 0.1): mean 20, std 4.2
    np.testing.assert_array_equal(poisson_hospitals(5, 7, 200, 0.1), draws[6])
    assert all(np.all(np.diff(d) > 0) for d in draws)


def test_dp_sgd_step_is_the_mean_of_clipped_per_sample_gradients_plus_noise() -> None:
    """Opacus' DPOptimizer: g = (1/B)[sum_i clip_C(g_i) + N(0, sigma^2 C^2)]; per-sample g_i
    computed here by one backward pass per sample."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    images, labels = torch.randn(32, 6), torch.randint(0, 3, (32,))
    clip, batch_size = 0.05, 8

    def per_sample_mean(batch: torch.Tensor) -> list[torch.Tensor]:
        clipped = []
        for i in batch:
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(images[i : i + 1]), labels[i : i + 1]).backward()
            grads = [p.grad.clone() for p in model.parameters()]
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            clipped.append([g * min(1.0, clip / float(norm)) for g in grads])
        return [sum(parts) / batch_size for parts in zip(*clipped)]

    for sigma in (0.0, 2.0):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        private = DPSGD(sigma, clip).attach(model, optimizer, len(labels), batch_size, seed=3)
        batch = next(private.batches())
        expected = per_sample_mean(batch)
        private.optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
        private.optimizer.pre_step()  # clip per sample, add noise, scale by 1 / B (no parameter change)
        got = [p.grad for p in model.parameters()]
        private.detach()
        residual = torch.cat([(g - e).ravel() for g, e in zip(got, expected)])
        if sigma == 0:
            assert float(residual.abs().max()) < 1e-6
            assert float(torch.cat([g.ravel() for g in got]).norm()) <= clip * len(batch) / batch_size + 1e-6
        else:
            assert float(residual.std()) == pytest.approx(sigma * clip / batch_size, rel=0.35)  # 43 entries


def test_dp_sgd_runs_in_classification_local_training() -> None:
    from fedsim.tasks.factory import build_task

    settings = ["data.hospitals=2", "data.source.train_samples=80", "data.source.test_samples=20", "data.source.image_size=8"]
    task = build_task(_dp_config(*settings, mechanism="dp_sgd"))
    assert task.dp_sgd == DPSGD(1.0, 1.0)
    from fedsim.protocol import LocalPlan

    params = task.initial_params(0)
    result = task.train(0, params, LocalPlan(epochs=1), None, seed=5)
    again = task.train(0, params, LocalPlan(epochs=1), None, seed=5)
    assert result.steps == math.ceil(task.hospital_sizes()[0] / 16)
    assert all(np.array_equal(result.params[n], again.params[n]) for n in params)  # seeded noise and batches
    assert any(not np.array_equal(result.params[n], params[n]) for n in params)
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in task._model.parameters())


@pytest.mark.parametrize(
    "settings, message",
    [
        (["privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0, delta: 1.0}"], "delta: expected 0 < delta < 1"),
        (["privacy={mechanism: central, clip_norm: 1.0, target_epsilon: 0}"], "target_epsilon: expected epsilon > 0"),
        (["privacy={mechanism: central, clip_norm: 1.0}"], "give noise_multiplier or target_epsilon"),
        (["task=scheduling", "privacy={mechanism: dp_sgd, clip_norm: 1.0, noise_multiplier: 1.0}"], "which task scheduling does not offer"),
        (["strategy=scaffold", "privacy={mechanism: central, clip_norm: 1.0, noise_multiplier: 1.0}"], "strategy scaffold is not supported"),
        (["strategy={name: fedprox, mu: 0.1}", "privacy={mechanism: dp_sgd, clip_norm: 1.0, noise_multiplier: 1.0}"], "which Opacus would drop"),
    ],
)
def test_impossible_privacy_settings_are_refused_in_one_line(settings: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_config(None, settings)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("mechanism, message", [("central", "shares normalisation statistics"), ("dp_sgd", "dp_sgd cannot train model small_cnn")])
def test_batchnorm_models_are_refused_for_dp(mechanism: str, message: str, tmp_path) -> None:
    from fedsim.simulation import Simulation

    config = load_config(None, [f"privacy={{mechanism: {mechanism}, clip_norm: 1.0, noise_multiplier: 1.0}}", "data.hospitals=2",
                                "data.source.train_samples=40", "data.source.image_size=8"])
    with pytest.raises(ConfigError, match=message):
        Simulation(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
