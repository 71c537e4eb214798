"""The QMIX team that picks every sampled hospital's proximal coefficient.

Owns the RLlib learner (agent + mixer RLModules in a MultiRLModule), the joint replay buffer and
the epsilon-greedy schedule; everything it draws comes from its own seeded generator, so a run
and a restored run pick the same actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from fedsim.fedmrl.qmix_learner import AGENT, MIXER, build_qmix_learner
from fedsim.fedmrl.qmix_modules import AgentQModule, MixerModule
from fedsim.fedmrl.replay import JointReplayBuffer, JointTransition


@dataclass(frozen=True)
class QMIXSettings:
    num_actions: int
    obs_dim: int
    state_dim: int
    max_agents: int
    lr: float = 5e-3
    gamma: float = 0.9
    target_tau: float = 0.05
    batch_size: int = 32
    updates_per_step: int = 4
    buffer_capacity: int = 5000
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_steps: int = 50
    hidden: int = 64
    seed: int = 0


def qmix_module_spec(s: QMIXSettings) -> MultiRLModuleSpec:
    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
    return MultiRLModuleSpec(
        rl_module_specs={
            AGENT: RLModuleSpec(module_class=AgentQModule, observation_space=box(s.obs_dim),
                                action_space=gym.spaces.Discrete(s.num_actions), model_config={"hidden": s.hidden}),
            MIXER: RLModuleSpec(module_class=MixerModule, observation_space=box(s.state_dim),
                                action_space=gym.spaces.Discrete(s.num_actions),
                                model_config={"agent_obs_dim": s.obs_dim, "hidden": s.hidden, "embed": 32}),
        }
    )


class QMIXTeam:
    def __init__(self, settings: QMIXSettings) -> None:
        self.settings = settings
        self.learner = build_qmix_learner(qmix_module_spec(settings), settings.lr, settings.gamma, settings.target_tau, settings.seed)
        self.buffer = JointReplayBuffer(settings.buffer_capacity, settings.max_agents, settings.obs_dim, settings.state_dim)
        self.rng = np.random.default_rng(settings.seed)
        self.steps = 0  # decisions taken, for the epsilon schedule

    def epsilon(self) -> float:
        s = self.settings
        fraction = min(1.0, self.steps / max(1, s.epsilon_decay_steps))
        return s.epsilon_start + fraction * (s.epsilon_end - s.epsilon_start)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            module = self.learner.module[AGENT].unwrapped()
            return module.q_net(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        """Each agent's action: greedy on its own Q (the decentralised argmax QMIX licenses), or a
        uniformly random one with probability epsilon."""
        greedy = self.q_values(obs).argmax(axis=1)
        if explore:
            random_pick = self.rng.random(len(obs)) < self.epsilon()
            greedy = np.where(random_pick, self.rng.integers(0, self.settings.num_actions, len(obs)), greedy)
            self.steps += 1
        return greedy.astype(np.int64)

    def record(self, transition: JointTransition) -> float:
        """Store a joint transition and train; returns the last TD loss (NaN before training)."""
        self.buffer.add(transition)  # a federated run yields one transition per round: train at once
        loss = float("nan")
        for _ in range(self.settings.updates_per_step):
            batch = self.buffer.sample(self.settings.batch_size, self.rng)
            result = self.learner.update(batch=MultiAgentBatch({AGENT: SampleBatch(batch)}, env_steps=len(batch["reward"])))
            loss = float(_peek(result[AGENT]["td_loss"]))
        return loss

    def get_state(self) -> dict[str, Any]:
        return {"learner": self.learner.get_state(), "buffer": self.buffer.get_state(),
                "rng": self.rng.bit_generator.state, "steps": self.steps}

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state["learner"])
        self.buffer.set_state(state["buffer"])
        self.rng.bit_generator.state = state["rng"]
        self.steps = state["steps"]


def _peek(value: Any) -> Any:
    return value.peek() if hasattr(value, "peek") else value
