"""FedMRL's three parts pinned down: the QMIX mixer and learner, SOM weights, the fairness term."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fedsim.config import load_config
from fedsim.data.federation import Federation
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import run_round
from fedsim.fedmrl.qmix import QMIXSettings, QMIXTeam
from fedsim.fedmrl.qmix_modules import MonotonicMixer
from fedsim.fedmrl.replay import JointTransition
from fedsim.fedmrl.som import CountSketch, SOMWeighting, som_densities
from fedsim.params import is_trained
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import Cohort, Instruction, LocalPlan
from fedsim.simulation import Simulation
from fedsim.strategies.fedmrl import FedMRL
from fedsim.strategies.fedprox import FedProx
from fedsim.tasks.classification import fairness_term
from fedsim.tasks.factory import build_task


def test_mixer_is_monotonic_in_every_agents_q() -> None:
    torch.manual_seed(0)
    mixer = MonotonicMixer(state_dim=6, obs_dim=4, embed=8, hidden=16)
    for agents in (1, 3, 7):
        q = torch.randn(64, agents, requires_grad=True)
        mask = (torch.rand(64, agents) > 0.2).float()
        q_tot = mixer(q, torch.randn(64, 6) * 3, torch.randn(64, agents, 4) * 3, mask)
        (grad,) = torch.autograd.grad(q_tot.sum(), q)
        assert torch.all(grad >= 0)
        assert torch.all(grad[mask == 0] == 0)  # absent agents do not count


COORDINATION_GAME = np.array([[10.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 2.0]])  # paid only when both agree


def _game_team(seed: int) -> QMIXTeam:
    return QMIXTeam(QMIXSettings(num_actions=3, obs_dim=2, state_dim=2, max_agents=2, gamma=0.0, batch_size=32,
                                 updates_per_step=2, epsilon_decay_steps=10**9, seed=seed))


def _play(team: QMIXTeam, rounds: int) -> None:
    obs = np.eye(2, dtype=np.float32)
    state = np.ones(2, dtype=np.float32)
    for _ in range(rounds):
        actions = team.act(obs)  # epsilon stays 1: uniform exploration
        reward = COORDINATION_GAME[actions[0], actions[1]]
        team.record(JointTransition(obs, actions, state, reward, np.zeros((0, 2), np.float32), state, True))


def test_qmix_learns_the_optimal_joint_action_of_a_coordination_game() -> None:
    team = _game_team(seed=3)
    _play(team, rounds=120)
    assert team.act(np.eye(2, dtype=np.float32), explore=False).tolist() == [0, 0]


def test_learner_and_replay_state_restore_exactly() -> None:
    original = _game_team(seed=5)
    _play(original, rounds=20)
    restored = _game_team(seed=99)
    restored.set_state(original.get_state())
    _play(original, rounds=5)
    _play(restored, rounds=5)
    obs = np.eye(2, dtype=np.float32)
    assert np.array_equal(original.q_values(obs), restored.q_values(obs))
    assert len(original.buffer) == len(restored.buffer) == 25


def test_som_density_formula_by_hand() -> None:
    units = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    squared = np.array([[0, 0, 1, 9], [0, 0, 1, 9], [1, 1, 0, 10], [9, 9, 10, 0]], dtype=float)
    m = np.median([0, 1, 9, 1, 9, 10])  # pairs of distinct hospitals
    expected = np.exp(-squared / (2 * m)).mean(axis=1)
    np.testing.assert_allclose(som_densities(units), expected)
    assert np.all(som_densities(np.zeros((3, 2))) == 1)


SOM_SEEDS = range(10)


def _som_weights_with_a_flipped_hospital(seed: int, flipped: int = 5) -> np.ndarray:
    """One round's SOM weights over 8 IID hospitals of which `flipped` reports the other class
    for every image; everything (data, training, sketch, map) drawn from `seed`."""
    config = load_config(None, ["data.source={kind: synthetic, classes: 2, train_samples: 800, test_samples: 50, image_size: 16}",
                                "data.hospitals=8", "data.partition={scheme: iid}", "train.epochs=1", "strategy=fedmrl",
                                f"seed={seed}"])
    task = build_task(config)

    class Flipped(Federation):
        def hospital_arrays(self, hospital, split):
            images, labels = super().hospital_arrays(hospital, split)
            return images, (1 - labels if hospital == flipped else labels)

    task.federation = Flipped(**{f.name: getattr(task.federation, f.name) for f in fields(Federation)})
    # outliers show once the model has learned something: start from a briefly pre-trained model
    start = task.train(0, task.initial_params(seed), LocalPlan(epochs=1), None, seed=seed).params
    strategy = FedMRL(config.strategy, total_rounds=1, max_cohort=8, seed=seed)
    sketches = []
    for hospital in range(8):
        result = task.train(hospital, start, LocalPlan(epochs=1), None, seed=100 * seed + hospital)
        sketches.append(strategy.contribution(result, Instruction(hospital, 1.0, LocalPlan(epochs=1)), start)["sketch"])
    weights, densities = SOMWeighting(64, 4, seed=seed).weights(np.array(sketches), task.hospital_sizes())
    np.testing.assert_allclose(weights, task.hospital_sizes() * densities / np.sum(task.hospital_sizes() * densities))
    return weights


def test_som_weights_discount_a_label_flipped_hospital_over_seeds() -> None:
    """A property over 10 seeds (data, training, sketch and map all drawn from the seed). The SOM
    discounts the flipped hospital mildly: below the others' mean weight in at least 9 seeds, but
    not reliably the lowest (4 of 10 when measured): its update points away from the others
    (negative cosines), yet with the kernel width set by the median pairwise distance of
    near-orthogonal unit sketches every hospital sits within about one width of the rest."""
    flipped = 5
    lowest, discounts = 0, []
    for seed in SOM_SEEDS:
        weights = _som_weights_with_a_flipped_hospital(seed, flipped)
        others = np.delete(weights, flipped)
        lowest += int(weights[flipped] < others.min())
        discounts.append(weights[flipped] / others.mean())
    print(f"SOM: flipped hospital lowest in {lowest}/{len(SOM_SEEDS)} seeds; its weight / the others' mean "
          f"{np.mean(discounts):.3f} +- {np.std(discounts):.3f} (min {np.min(discounts):.3f}, max {np.max(discounts):.3f})")
    assert sum(d < 1 for d in discounts) >= 9 and np.mean(discounts) < 1, discounts


def test_count_sketch_plans_differ_between_same_size_layers_with_a_common_prefix() -> None:
    sketch = CountSketch(16, seed=0)
    update = np.ones(50)
    assert not np.array_equal(sketch({"blocks.10.weight": update}), sketch({"blocks.11.weight": update}))
    np.testing.assert_array_equal(sketch({"blocks.10.weight": update}), CountSketch(16, seed=0)({"blocks.10.weight": update}))


class _Recording(InProcessBackend):
    """The in-process backend, remembering what the server saw when it weighed."""

    def weigh(self, round_index, instructions, reports, summaries):
        self.summaries = [summary for batch in summaries for summary in batch]
        self.held = {h: c for worker in self._trained for h, c in worker.held.items()}
        self.weights = super().weigh(round_index, instructions, reports, summaries)
        return self.weights


def _one_round(task, strategy, workers: int) -> tuple[dict, list, dict, dict]:
    """One round of the engine's protocol, hospitals split over `workers`; returns the new
    broadcast and, for a strategy that weighs after training, the summaries the server saw, the
    weights and the contributions the workers held."""
    backend = _Recording(task, strategy, Pipeline([]), task.initial_params(0), 7, workers)
    hospitals = np.arange(task.num_hospitals)
    run_round(backend, task, 1, Cohort(hospitals, task.hospital_sizes(), np.ones(len(hospitals), dtype=np.int64)), None)
    if not strategy.weighs_after_training:
        return backend.server.broadcast, [], {}, {}
    return backend.server.broadcast, backend.summaries, backend.weights, backend.held


def _fedmrl(settings: str):
    config = load_config(None, ["data.source={kind: synthetic, classes: 2, train_samples: 400, test_samples: 50}",
                                "data.hospitals=4", "train.epochs=1", f"strategy={settings}"])
    return build_task(config), FedMRL(config.strategy, total_rounds=1, max_cohort=4, seed=0)


def test_fedmrl_server_sees_sketches_only_and_aggregates_with_som_weights() -> None:
    task, strategy = _fedmrl("{name: fedmrl, qmix: false, fixed_mu: 0.01}")
    start = task.initial_params(0)
    together, summaries, weights, held = _one_round(task, strategy, workers=1)
    split, _, split_weights, _ = _one_round(task, _fedmrl("{name: fedmrl, qmix: false, fixed_mu: 0.01}")[1], workers=2)
    assert all(list(summary) == ["sketch"] for _, summary in summaries)
    assert sum(weights.values()) == pytest.approx(1.0) and len(set(weights.values())) > 1
    assert split_weights == weights
    for name, value in start.items():
        assert np.array_equal(together[name], split[name])  # bitwise, whatever the grouping
        if is_trained(name, value):
            expected = value + sum(weights[h] * held[h][name].astype(np.float64) for h in range(4))
            np.testing.assert_allclose(together[name], expected, rtol=0, atol=1e-6)


def test_fedmrl_with_every_part_off_is_fedprox() -> None:
    task, strategy = _fedmrl("{name: fedmrl, qmix: false, som: false, fairness_lambda: 0, fixed_mu: 0.1}")
    fedmrl, *_ = _one_round(task, strategy, workers=2)
    fedprox, *_ = _one_round(task, FedProx(0.1), workers=2)
    moved = False
    for name, value in fedprox.items():
        np.testing.assert_allclose(fedmrl[name], value, rtol=0, atol=1e-6)
        moved |= not np.allclose(value, task.initial_params(0)[name])
    assert moved


def test_team_reward_is_the_change_of_the_configured_metric() -> None:
    config = load_config(None, ["strategy={name: fedmrl, reward: val_balanced_accuracy}"])
    strategy = FedMRL(config.strategy, total_rounds=3, max_cohort=2, seed=0)
    cohort = Cohort(np.array([0, 1]), np.array([10, 30]), np.ones(2, dtype=np.int64))
    first = {"val_accuracy": 0.9, "val_balanced_accuracy": 0.50, "val_loss": 0.4}
    then = {"val_accuracy": 0.7, "val_balanced_accuracy": 0.62, "val_loss": 0.5}
    strategy.configure(1, cohort)
    strategy.observe(1, first)  # nothing to compare with yet
    strategy.configure(2, cohort)
    strategy.observe(2, then)
    assert strategy.pending["reward"] == pytest.approx(0.12)  # balanced accuracy up, though accuracy fell
    assert strategy.global_loss == 0.5


def test_level_reward_is_the_metric_itself_and_losses_are_negated() -> None:
    config = load_config(None, ["strategy={name: fedmrl, reward_form: level}"])
    strategy = FedMRL(config.strategy, total_rounds=3, max_cohort=2, seed=0)
    assert strategy.reward(0.7, previous=0.9) == pytest.approx(0.7)
    loss = FedMRL(load_config(None, ["strategy={name: fedmrl, reward: val_loss}"]).strategy, 3, 2, 0)
    assert loss.reward(0.5, previous=0.4) == pytest.approx(-0.1)


@pytest.mark.parametrize("rounds, fraction, decayed_at", [(15, 0.5, 8), (60, 0.5, 30), (60, 0.25, 15)])
def test_epsilon_decays_over_a_fraction_of_the_run(rounds, fraction, decayed_at) -> None:
    config = load_config(None, [f"strategy={{name: fedmrl, epsilon_decay_fraction: {fraction}}}"])
    team = FedMRL(config.strategy, total_rounds=rounds, max_cohort=2, seed=0).team()
    obs = np.zeros((2, 8), np.float32)
    epsilons = []
    for _ in range(rounds):
        epsilons.append(team.epsilon())
        team.act(obs)
    assert epsilons[0] == 1.0 and epsilons[decayed_at - 1] > 0.05
    assert epsilons[decayed_at] == pytest.approx(0.05) and epsilons[-1] == pytest.approx(0.05)


def test_fairness_term_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))

    def objective() -> torch.Tensor:
        return fairness_term(torch.nn.functional.cross_entropy(model(x), y), global_loss=0.4, strength=0.7)

    objective().backward()
    analytic = model.weight.grad.clone()
    numeric = torch.zeros_like(analytic)
    eps = 1e-6
    with torch.no_grad():
        for index in np.ndindex(*analytic.shape):
            model.weight[index] += eps
            up = float(objective())
            model.weight[index] -= 2 * eps
            down = float(objective())
            model.weight[index] += eps
            numeric[index] = (up - down) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_fedmrl_run_logs_mu_and_som_weight_per_hospital(tmp_path: Path) -> None:
    config = load_config(None, [
        "rounds=3", "engine.backend=in_process", "data.source={kind: synthetic, classes: 3, train_samples: 2000, test_samples: 200}",
        "data.hospitals=50", "sampling.clients_per_round=10", "train.epochs=1", "strategy=fedmrl",
    ])
    Simulation(config, tmp_path / "run", quiet=True).run()
    clients = pq.read_table(tmp_path / "run" / "clients.parquet").to_pydict()
    assert len(clients["hospital"]) == 30
    assert set(clients["mu"]) <= set(config.strategy.mu_grid)
    for round_index in (1, 2, 3):
        weights = [w for r, w in zip(clients["round"], clients["som_weight"]) if r == round_index]
        assert len(weights) == 10 and sum(weights) == pytest.approx(1.0)
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pydict()
    assert np.isfinite(rounds["strategy_qmix_td_loss"][-1])  # the team learned from stored transitions
    # counted when each round aggregates: round 2 is stored at round 3's configure, round 3 (terminal) after it
    assert rounds["strategy_qmix_transitions"] == [0.0, 0.0, 1.0]
    assert all(0 <= v <= 1 for v in rounds["global_val_balanced_accuracy"])


def test_fedmrl_ablations_switch_parts_off(tmp_path: Path) -> None:
    config = load_config(None, [
        "rounds=2", "engine.backend=in_process", "data.source={kind: synthetic, classes: 2, train_samples: 400, test_samples: 100}",
        "data.hospitals=6", "train.epochs=1",
        "strategy={name: fedmrl, qmix: false, fixed_mu: 0.1, som: false, fairness_lambda: 0}",
    ])
    Simulation(config, tmp_path / "ablation", quiet=True).run()
    clients = pq.read_table(tmp_path / "ablation" / "clients.parquet").to_pydict()
    assert set(clients["mu"]) == {0.1}
    np.testing.assert_allclose(clients["som_weight"], clients["weight"])
