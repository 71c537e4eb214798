"""The scheduling task without Ray: per-hospital DQN state across rounds, determinism, the
strategy settings it honours, heuristics and the centralised learner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.config import ConfigError, load_config
from fedsim.protocol import LocalPlan
from fedsim.scheduling.dqn import epsilon_at
from fedsim.tasks.factory import build_task
from fedsim.tasks.scheduling import SchedulingTask

SMALL = [
    "task=scheduling",
    "scheduling.hospitals=3",
    "scheduling.eval_episodes=1",
    "scheduling.env.episode_hours=4",
    "scheduling.dqn={steps_per_epoch: 60, learning_starts: 30, buffer_size: 100, batch_size: 16, "
    "target_update_steps: 50, exploration_steps: 200}",
]


@pytest.fixture(autouse=True)
def one_thread():
    """As on a worker: tiny matrices are slower with threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _task(*overrides: str) -> SchedulingTask:
    task = build_task(load_config(None, [*SMALL, *overrides]))
    assert isinstance(task, SchedulingTask)
    return task


def _read_only(state):
    """What a state looks like after a trip through Ray's object store."""
    for array in (state.buffer.observations, state.buffer.actions, state.buffer.rewards, state.buffer.next_observations):
        array.flags.writeable = False
    return state


def test_replay_buffer_exploration_and_target_persist_across_rounds() -> None:
    task = _task()
    params = task.initial_params(0)
    first = task.train(1, params, LocalPlan(epochs=1), None, seed=11)
    assert first.num_samples == 60 and first.metrics["replay_size"] == 60 and first.metrics["env_steps"] == 60
    assert first.steps == first.metrics["grad_steps"] == len(range(32, 61, 4))  # every 4th step after 30
    second = task.train(1, first.params, LocalPlan(epochs=2), _read_only(first.state), seed=12)
    assert second.metrics["env_steps"] == 180 and second.metrics["replay_size"] == 100  # full: the ring wraps
    assert second.metrics["epsilon"] < first.metrics["epsilon"]
    assert second.metrics["epsilon"] == pytest.approx(epsilon_at(task.config.dqn, 180))
    assert second.steps == len(range(64, 181, 4))
    assert not np.array_equal(second.params["net.0.weight"], first.params["net.0.weight"])
    # the target network is carried over (updated every 50 steps), not reset to the received model
    assert not np.array_equal(second.state.target["net.0.weight"], first.params["net.0.weight"])
    assert np.isfinite(second.metrics["td_loss"])


def test_training_is_a_pure_function_of_params_state_and_seed() -> None:
    task = _task()
    params = task.initial_params(0)
    one = task.train(2, params, LocalPlan(epochs=1), None, seed=5)
    two = _task().train(2, params, LocalPlan(epochs=1), None, seed=5)
    other = task.train(2, params, LocalPlan(epochs=1), None, seed=6)
    for name in params:
        assert one.params[name].tobytes() == two.params[name].tobytes()
    assert one.state.buffer.observations.tobytes() == two.state.buffer.observations.tobytes()
    assert not np.array_equal(one.params["net.0.weight"], other.params["net.0.weight"])


def _distance(a: dict, b: dict) -> float:
    return float(np.sqrt(sum(np.sum((a[n] - b[n]) ** 2) for n in a)))


def test_fedprox_mu_keeps_the_local_network_near_the_global_one() -> None:
    task = _task("scheduling.dqn.lr=0.01")
    params = task.initial_params(0)
    free = task.train(0, params, LocalPlan(epochs=2), None, seed=3)
    held = task.train(0, params, LocalPlan(epochs=2, mu=100.0), None, seed=3)
    assert _distance(held.params, params) < 0.5 * _distance(free.params, params)


def test_scaffold_correction_is_added_to_the_gradients() -> None:
    task = _task()
    params = task.initial_params(0)
    plain = task.train(0, params, LocalPlan(epochs=1), None, seed=3)
    shift = {name: np.full_like(array, 1.0) for name, array in params.items()}
    corrected = task.train(0, params, LocalPlan(epochs=1, gradient_correction=shift), None, seed=3)
    # a constant positive correction pushes every weight down relative to the plain run
    assert np.mean(corrected.params["net.4.bias"] - plain.params["net.4.bias"]) < 0


@pytest.mark.parametrize("policy", ["fifo", "priority", "mlfq"])
def test_heuristics_train_nothing_and_score_hospitals(policy: str) -> None:
    task = _task(f"scheduling.policy={policy}")
    params = task.initial_params(0)
    result = task.train(0, params, LocalPlan(epochs=1), None, seed=1)
    assert result.steps == 0 and result.state is None
    assert all(result.params[n].tobytes() == params[n].tobytes() for n in params)
    scores = task.evaluate_hospital(0, params, None)
    assert set(scores) == set(task.global_metric_names) and scores["acuity_weighted_wait"] >= 0


def test_centralised_learner_pools_every_hospitals_experience_at_one_site() -> None:
    task = _task("scheduling.centralised=true")
    assert task.hospital_sizes().tolist() == [180, 0, 0]
    params = task.initial_params(0)
    site = task.train(0, params, LocalPlan(epochs=1), None, seed=2)
    assert site.num_samples == 180 and site.metrics["replay_size"] == 180 and site.state.buffer.capacity == 300
    assert site.metrics["env_steps"] == 60  # each hospital's clock advanced 60 steps
    idle = task.train(1, params, LocalPlan(epochs=1), None, seed=2)
    assert idle.num_samples == 0 and all(idle.params[n].tobytes() == params[n].tobytes() for n in params)


def test_the_greedy_policy_only_takes_actions_that_take_effect() -> None:
    task = _task("scheduling.env.episode_hours=24")
    trained = task.train(0, task.initial_params(0), LocalPlan(epochs=1), None, seed=4).params
    policy, env = task._policy(trained), task._env(0)
    observation, info = env.reset(seed=1)
    taken = 0
    for _ in range(240):
        action = int(policy(observation[np.newaxis], [env.hospital])[0])
        assert info["action_mask"][action]
        observation, _, _, _, info = env.step(action)
        taken += not info["invalid"]
    assert taken > 0


def test_global_evaluation_plays_seeded_network_episodes() -> None:
    task = _task()
    params = task.initial_params(0)
    assert task.global_eval_units() == 1
    outputs = [task.evaluate_unit(0, params)]
    assert len(outputs[0]) == 3  # one log per hospital of the network
    metrics = task.global_metrics(outputs)
    assert list(metrics) == list(task.global_metric_names)
    assert metrics == task.global_metrics([task.evaluate_unit(0, params)])
    assert task.partition_table().num_rows == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["scheduling.env.queues=4"], "scheduling.env.boost_hours"),  # the default has 2 values, 4 queues need 3
        (["scheduling.env.queues=2", "scheduling.env.boost_hours=[1.0]"], "scheduling.env.start_queue"),
        (["scheduling.env.boost_hours=[1.0]"], "scheduling.env.boost_hours"),
        (["scheduling.env.step_minutes=7"], "scheduling.env.step_minutes"),
        (["scheduling.profiles.arrival_rate=[5, 2]"], "scheduling.profiles.arrival_rate"),
        (["scheduling.reward.acuity_weights=[1, 2]"], "scheduling.reward.acuity_weights"),
        (["scheduling.policy=fifo", "strategy=fedprox"], "strategy.name"),
        (["strategy=fedmrl"], "strategy.name: fedmrl needs validation accuracy"),
        (["strategy=fedbn"], "strategy.name: fedbn needs normalisation layers"),  # the Q-network has none
        (["strategy=scaffold"], "strategy.name: scaffold needs plain local SGD"),  # the DQN trains with Adam
        (["strategy=fednova"], "strategy.name: fednova needs plain local SGD"),
        (["scheduling.centralised=true", "sampling.clients_per_round=2"], "sampling.clients_per_round"),
        (["scheduling.policy=mlfq", "scheduling.centralised=true"], "scheduling.centralised"),
        (["sampling.clients_per_round=4"], "scheduling.hospitals (3)"),
        (["scheduling.dqn.gama=0.9"], "scheduling.dqn.gama: unknown key"),
    ],
)
def test_bad_scheduling_settings_fail_with_one_line_naming_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [*SMALL, *overrides])
    message = str(error.value)
    assert "\n" not in message and field in message, message


def test_the_scheduling_section_belongs_to_the_scheduling_task() -> None:
    with pytest.raises(ConfigError, match="scheduling: only used when task is scheduling"):
        load_config(None, ["scheduling.hospitals=4"])
    assert load_config(None, ["task=scheduling"]).num_hospitals() == 10
