"""The federated process as an RLlib MultiAgentEnv."""

from __future__ import annotations

import numpy as np

from fedsim.fedmrl.env import FederatedRoundsEnv

OVERRIDES = ["rounds=2", "data.source={kind: synthetic, classes: 2, train_samples: 300, test_samples: 60}",
             "data.hospitals=6", "sampling.clients_per_round=3", "train.epochs=1"]


def _episode(seed: int) -> list[tuple]:
    env = FederatedRoundsEnv({"overrides": OVERRIDES})
    obs, infos = env.reset(seed=seed)
    trace = []
    while True:
        assert set(obs) == set(env.agents) and len(obs) == 3 and set(obs) <= set(env.possible_agents)
        for agent, observation in obs.items():
            assert env.observation_spaces[agent].contains(observation)
            assert infos[agent]["state"].shape == env.state_space.shape
        actions = {agent: i % 5 for i, agent in enumerate(obs)}
        obs, rewards, terminated, truncated, infos = env.step(actions)
        assert len(set(rewards.values())) == 1  # one team reward
        trace.append((sorted(rewards), next(iter(rewards.values()))))
        if terminated["__all__"]:
            return trace


def test_env_runs_rounds_to_termination_with_a_team_reward() -> None:
    trace = _episode(seed=0)
    assert len(trace) == 2
    assert all(np.isfinite(reward) for _, reward in trace)


def test_env_is_reproducible_from_its_seed() -> None:
    assert _episode(seed=4) == _episode(seed=4)
