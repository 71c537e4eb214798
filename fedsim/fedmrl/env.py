"""The federated process as a standard RLlib `MultiAgentEnv`: one step is one round.

Agents are the round's sampled hospitals ("hospital_<id>", a different subset each round), each
choosing an index into FedMRL's mu grid from its FedMRL observation; every acting agent gets the
team reward, the change of the global validation metric the round caused (the initial model is
evaluated at reset, so round 1 has a reward too). `infos[agent]["state"]` carries the mixer's
global state. It runs in-process on the engine's plain cores (one WorkerCore, one ServerCore, no
Ray actors), so any multi-agent learner can train on the real federated dynamics.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from fedsim.config import Config, FedMRLConfig, load_config
from fedsim.engine.server import ServerCore
from fedsim.engine.worker import WorkerCore
from fedsim.local_work import round_cohort
from fedsim.protocol import Instruction
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.fedmrl import OBSERVATION, STATE, FedMRL
from fedsim.tasks.factory import build_task


def agent_id(hospital: int) -> str:
    return f"hospital_{hospital}"


class FederatedRoundsEnv(MultiAgentEnv):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        """`config`: {"overrides": ["key=value", ...]} on fedsim's defaults (strategy is forced
        to fedmrl with its own QMIX off: the actions come from outside)."""
        super().__init__()
        overrides = list((config or {}).get("overrides", []))
        base = load_config(None, overrides)
        spec = base.strategy if isinstance(base.strategy, FedMRLConfig) else FedMRLConfig(name="fedmrl")
        self.config: Config = base.model_copy(update={"strategy": spec.model_copy(update={"qmix": False})})
        self.task = build_task(self.config)
        self.sizes = self.task.hospital_sizes()
        self.grid = np.array(spec.mu_grid)
        self.possible_agents = [agent_id(h) for h in range(self.task.num_hospitals)]
        self.agents = []
        observation = gym.spaces.Box(-np.inf, np.inf, (len(OBSERVATION),), np.float32)
        self.observation_spaces = {a: observation for a in self.possible_agents}
        self.action_spaces = {a: gym.spaces.Discrete(len(self.grid)) for a in self.possible_agents}
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (len(STATE),), np.float32)

    def _metric(self) -> float:
        units = range(self.task.global_eval_units())
        _, outputs = self.worker.evaluate(self.server.broadcast, [], list(units))
        metrics = self.task.global_metrics(outputs)
        self.strategy.observe(self.round, metrics, {})
        return float(self.strategy.last_metric)  # type: ignore[arg-type]

    def _observe(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.cohort = round_cohort(self.config, self.task, self.sizes, self.seed, self.round)
        obs = self.strategy.observations(self.cohort)
        state = self.strategy.global_state(obs, self.round)
        self.agents = [agent_id(int(h)) for h in self.cohort.hospitals]
        return dict(zip(self.agents, obs)), {a: {"state": state} for a in self.agents}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.seed = self.config.seed if seed is None else seed
        self.strategy = FedMRL(self.config.strategy, self.config.rounds, self.config.clients_per_round(), self.seed)  # type: ignore[arg-type]
        self.server = ServerCore(self.strategy, self.task.initial_params(seed_for(self.seed, Stream.MODEL_INIT)))
        self.worker = WorkerCore(self.task, self.strategy, use_gpu=False, threads=1)
        self.round = 0
        self.metric = self._metric()  # the initial model's, so round 1 earns a reward too
        self.round = 1
        return self._observe()

    def step(self, action_dict: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        chosen = [Instruction(i.hospital, i.weight, {**i.settings, "mu": float(self.grid[action_dict[agent_id(i.hospital)]])})
                  for i in self.server.configure(self.round, self.cohort)]
        summaries, reports = self.worker.train(self.round, self.seed, self.server.broadcast, chosen, *[None] * len(chosen))
        weights = self.server.weigh(self.round, chosen, reports, summaries)
        self.server.aggregate(self.round, chosen, reports, self.worker.weighted_sum(weights))
        previous, self.metric = self.metric, self._metric()
        sign = -1.0 if self.config.strategy.reward.endswith("loss") else 1.0  # type: ignore[union-attr]
        reward = sign * (self.metric - previous)
        acted = list(self.agents)
        done = self.round == self.config.rounds
        self.round += 1
        if done:
            self.agents = []
            obs, infos = {}, {}
        else:
            obs, infos = self._observe()
        return obs, {a: reward for a in acted}, {"__all__": done}, {"__all__": False}, infos
