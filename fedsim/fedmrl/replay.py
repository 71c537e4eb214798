"""A replay buffer of *joint* transitions (RLlib's episode buffers flatten agents; QMIX must
keep one round's hospitals together). Agents are padded to `max_agents` with a mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FIELDS = ("obs", "actions", "mask", "state", "reward", "next_obs", "next_mask", "next_state", "done")


@dataclass(frozen=True)
class JointTransition:
    obs: np.ndarray  # (A, O) this round's agents
    actions: np.ndarray  # (A,)
    state: np.ndarray  # (S,)
    reward: float
    next_obs: np.ndarray  # (A', O) next round's agents (another subset, maybe another size)
    next_state: np.ndarray
    done: bool


class JointReplayBuffer:
    def __init__(self, capacity: int, max_agents: int, obs_dim: int, state_dim: int) -> None:
        self.capacity, self.max_agents = capacity, max_agents
        shapes = {
            "obs": (max_agents, obs_dim), "actions": (max_agents,), "mask": (max_agents,), "state": (state_dim,),
            "reward": (), "next_obs": (max_agents, obs_dim), "next_mask": (max_agents,), "next_state": (state_dim,), "done": (),
        }
        self.data = {name: np.zeros((capacity, *shape), dtype=np.int64 if name == "actions" else np.float32) for name, shape in shapes.items()}
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def add(self, t: JointTransition) -> None:
        i, a, a_next = self.cursor, len(t.actions), len(t.next_obs)
        if a > self.max_agents or a_next > self.max_agents:
            raise ValueError(f"replay: cohort of {max(a, a_next)} exceeds max_agents={self.max_agents}")
        for name in FIELDS:
            self.data[name][i] = 0
        self.data["obs"][i, :a] = t.obs
        self.data["actions"][i, :a] = t.actions
        self.data["mask"][i, :a] = 1.0
        self.data["state"][i] = t.state
        self.data["reward"][i] = t.reward
        self.data["next_obs"][i, :a_next] = t.next_obs
        self.data["next_mask"][i, :a_next] = 1.0
        self.data["next_state"][i] = t.next_state
        self.data["done"][i] = float(t.done)
        self.cursor = (self.cursor + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = rng.integers(0, self.size, size=batch_size)
        return {name: array[rows] for name, array in self.data.items()}

    def get_state(self) -> dict[str, Any]:
        return {"data": {k: v.copy() for k, v in self.data.items()}, "size": self.size, "cursor": self.cursor}

    def set_state(self, state: dict[str, Any]) -> None:
        self.data = {k: v.copy() for k, v in state["data"].items()}
        self.size, self.cursor = state["size"], state["cursor"]
