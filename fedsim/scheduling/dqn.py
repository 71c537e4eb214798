"""DQN (Mnih et al., 2015) with an optional double-DQN target (van Hasselt et al., 2016) and
invalid-action masking (Huang & Ontañón, 2022), written CleanRL-style: one loop, read top to
bottom, in plain torch.

Hyperparameters and their defaults: fedsim.scheduling.config.DQNConfig (steps_per_epoch, hidden,
lr, gamma, buffer_size, batch_size, learning_starts, train_frequency, target_update_steps,
epsilon_start/end, exploration_steps, double_dqn, reward_scale, max_grad_norm).

One call of `train_dqn` is one hospital's local work in a round. What survives to the hospital's
next round is a `LearnerState` — the replay buffer, the target network and the step count that
drives the epsilon schedule, learning start and target updates. The online network arrives as
the round's model and leaves as the update; the Adam optimiser restarts each round from it, as
local SGD does in classification (both are torch.optim's steps without the Optimizer class,
whose first use imports torch._dynamo: fedsim.tasks.local_optim).

Masking: the environment's invalid-action rule makes an action that cannot take effect a no-op;
the learner never picks one (greedy or random) and bootstraps over the valid next actions only,
using the env's `action_mask`. Episodes never terminate (they are truncated), so every target
bootstraps: y = r * reward_scale + gamma * Q_target(s', a*), a* the valid argmax of Q_online(s')
with double DQN, of Q_target(s') without. Loss: mean squared TD error, plus FedProx's
(mu/2)||w - w_global||^2 when mu > 0; SCAFFOLD's gradient correction is added to the gradients.

`envs` holds one env per hospital whose experience this learner collects: one for a hospital's
own DQN, all of them for the centralised learner. Each iteration steps every env once, and every
`train_frequency` iterations the learner takes one gradient step per env, so the ratio of
gradient steps to transitions is the same in both cases; the buffer holds buffer_size per env.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedsim.params import Params
from fedsim.scheduling.config import DQNConfig
from fedsim.scheduling.env import HospitalEnv
from fedsim.tasks.local_optim import LocalAdam
from fedsim.torch_params import load_params, params_of


class QNetwork(nn.Module):
    """An MLP from an observation to one Q-value per action."""

    def __init__(self, observation_size: int, num_actions: int, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = observation_size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


def epsilon_at(config: DQNConfig, step: int) -> float:
    """Linear decay from epsilon_start to epsilon_end over exploration_steps, then constant."""
    fraction = min(1.0, step / config.exploration_steps)
    return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)


@dataclass
class ReplayBuffer:
    """A ring buffer of (s, a, r, s', valid actions in s') transitions (r already scaled)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    next_masks: np.ndarray
    size: int = 0
    position: int = 0

    @classmethod
    def empty(cls, capacity: int, observation_size: int, num_actions: int) -> "ReplayBuffer":
        return cls(
            np.zeros((capacity, observation_size), dtype=np.float32),
            np.zeros(capacity, dtype=np.int64),
            np.zeros(capacity, dtype=np.float32),
            np.zeros((capacity, observation_size), dtype=np.float32),
            np.ones((capacity, num_actions), dtype=bool),
        )

    @property
    def capacity(self) -> int:
        return len(self.actions)

    def writable(self) -> "ReplayBuffer":
        """A copy that can be written to (arrays that came through Ray's object store are read-only)."""
        arrays = ("observations", "actions", "rewards", "next_observations", "next_masks")
        return replace(self, **{name: getattr(self, name).copy() for name in arrays})

    def add(
        self, observation: np.ndarray, action: int, reward: float, next_observation: np.ndarray, next_mask: np.ndarray
    ) -> None:
        i = self.position
        self.observations[i], self.actions[i], self.rewards[i] = observation, action, reward
        self.next_observations[i], self.next_masks[i] = next_observation, next_mask
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)


@dataclass
class LearnerState:
    """A hospital's DQN state between rounds (engine-held hospital state)."""

    buffer: ReplayBuffer
    target: Params
    env_steps: int  # iterations taken so far, over all rounds

    def epsilon(self, config: DQNConfig) -> float:
        return epsilon_at(config, self.env_steps)


def new_state(config: DQNConfig, params: Params, observation_size: int, num_actions: int, envs: int) -> LearnerState:
    return LearnerState(ReplayBuffer.empty(config.buffer_size * envs, observation_size, num_actions), dict(params), 0)


@dataclass(frozen=True)
class Regularisers:
    """What a federated strategy adds to the local objective (see the module docstring)."""

    mu: float
    anchor: dict[str, torch.Tensor]  # the received model, for FedProx's proximal term
    correction: dict[str, torch.Tensor]  # SCAFFOLD's c - c_i, added to each gradient

    @classmethod
    def of(cls, online: QNetwork, mu: float, correction: Mapping[str, np.ndarray] | None) -> "Regularisers":
        device = next(online.parameters()).device
        anchor = {name: p.detach().clone() for name, p in online.named_parameters()} if mu > 0 else {}
        shift = {name: torch.tensor(np.asarray(a), device=device) for name, a in (correction or {}).items()}
        return cls(mu, anchor, shift)


def train_dqn(
    config: DQNConfig,
    online: QNetwork,
    target: QNetwork,
    params: Params,
    state: LearnerState,
    envs: list[HospitalEnv],
    iterations: int,
    seed: int,
    mu: float = 0.0,
    correction: Mapping[str, np.ndarray] | None = None,
) -> tuple[Params, LearnerState, dict[str, float]]:
    """Start `online` from `params`, collect `iterations` steps from every env and learn; all
    randomness from `seed`. Returns the trained online parameters, the new state and round metrics."""
    rng = np.random.default_rng(seed)
    device = next(online.parameters()).device
    load_params(online, params)
    load_params(target, state.target)
    regularisers = Regularisers.of(online, mu, correction)
    buffer = state.buffer.writable()
    optimizer = LocalAdam(online.parameters(), config.lr)
    resets = [env.reset(seed=int(s)) for env, s in zip(envs, rng.integers(2**63 - 1, size=len(envs)))]
    observations = np.stack([observation for observation, _ in resets])
    masks = np.stack([info["action_mask"] for _, info in resets])
    steps, losses, reward_sum = state.env_steps, [], 0.0
    for _ in range(iterations):
        explore = rng.random(len(envs)) < epsilon_at(config, steps)
        picks = rng.random(len(envs))  # a random valid action: the floor(pick * count)-th valid one
        actions = np.array([np.flatnonzero(mask)[int(pick * mask.sum())] for mask, pick in zip(masks, picks)])
        if not explore.all():
            with torch.no_grad():
                values = online(torch.from_numpy(observations).to(device)).cpu().numpy()
            actions = np.where(explore, actions, np.where(masks, values, -np.inf).argmax(axis=1))
        for i, env in enumerate(envs):
            next_observation, reward, _, truncated, info = env.step(int(actions[i]))
            buffer.add(observations[i], int(actions[i]), reward * config.reward_scale, next_observation, info["action_mask"])
            reward_sum += reward
            if truncated:
                next_observation, info = env.reset(seed=int(rng.integers(2**63 - 1)))
            observations[i], masks[i] = next_observation, info["action_mask"]
        steps += 1
        if steps > config.learning_starts and steps % config.train_frequency == 0:
            for _ in envs:
                losses.append(_gradient_step(config, online, target, optimizer, buffer, rng, regularisers))
        if steps % config.target_update_steps == 0:
            target.load_state_dict(online.state_dict())
    new = LearnerState(buffer, params_of(target), steps)
    metrics = {
        "replay_size": float(buffer.size),
        "epsilon": new.epsilon(config),
        "env_steps": float(steps),
        "grad_steps": float(len(losses)),
        "td_loss": float(np.mean(losses)) if losses else float("nan"),
        "train_reward_per_step": reward_sum / (iterations * len(envs)),
    }
    return params_of(online), new, metrics


def _gradient_step(
    config: DQNConfig,
    online: QNetwork,
    target: QNetwork,
    optimizer: LocalAdam,
    buffer: ReplayBuffer,
    rng: np.random.Generator,
    regularisers: Regularisers,
) -> float:
    device = next(online.parameters()).device
    batch = rng.integers(buffer.size, size=config.batch_size)
    observations = torch.from_numpy(buffer.observations[batch]).to(device)
    actions = torch.from_numpy(buffer.actions[batch]).to(device)
    rewards = torch.from_numpy(buffer.rewards[batch]).to(device)
    next_observations = torch.from_numpy(buffer.next_observations[batch]).to(device)
    invalid = ~torch.from_numpy(buffer.next_masks[batch]).to(device)
    with torch.no_grad():
        next_values = target(next_observations)
        chooser = online(next_observations) if config.double_dqn else next_values
        chosen = chooser.masked_fill(invalid, -torch.inf).argmax(dim=1, keepdim=True)
        targets = rewards + config.gamma * next_values.gather(1, chosen).squeeze(1)
    values = online(observations).gather(1, actions.unsqueeze(1)).squeeze(1)
    loss = F.mse_loss(values, targets)
    objective = loss
    if regularisers.anchor:
        objective = loss + 0.5 * regularisers.mu * sum(
            torch.sum((p - regularisers.anchor[name]) ** 2) for name, p in online.named_parameters()
        )
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    for name, parameter in online.named_parameters():
        if name in regularisers.correction:
            parameter.grad.add_(regularisers.correction[name])
    nn.utils.clip_grad_norm_(online.parameters(), config.max_grad_norm)
    optimizer.step()
    return float(loss.detach())
