"""The federated process as a standard RLlib `MultiAgentEnv`: one step is one round.

Agents are the round's sampled hospitals ("hospital_<id>", a different subset each round), each
choosing an index into FedMRL's mu grid from its FedMRL observation; every acting agent gets the
team reward, FedMRL's (the change, or level, of the global validation metric the round caused) (the initial model is
evaluated at reset, so round 1 has a reward too). `infos[agent]["state"]` carries the mixer's
global state. Each step runs the engine's own round protocol (fedsim.engine.rounds) on the
in-process backend (no Ray actors), so any multi-agent learner trains on the real federated dynamics.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from fedsim.config import Config, load_config
from fedsim.engine.in_process import InProcessBackend
from fedsim.engine.rounds import RoundSchedule, run_round, validation_metrics
from fedsim.pipeline.base import build_pipeline
from fedsim.protocol import Cohort, Instruction
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.fedmrl import OBSERVATION, STATE, FedMRL, FedMRLConfig
from fedsim.tasks.factory import build_task


def agent_id(hospital: int) -> str:
    return f"hospital_{hospital}"


class _ActedFedMRL(FedMRL):
    """FedMRL whose mu per hospital comes from outside (the env's actions) instead of its QMIX."""

    chosen: dict[int, float]  # hospital -> mu, set by the env before each round

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        planned = super().configure(round_index, cohort)
        return [replace(i, plan=replace(i.plan, mu=self.chosen[i.hospital])) for i in planned]


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
        self.schedule = RoundSchedule(self.config, self.task)
        self.grid = np.array(spec.mu_grid)
        self.possible_agents = [agent_id(h) for h in range(self.task.num_hospitals)]
        self.agents = []
        observation = gym.spaces.Box(-np.inf, np.inf, (len(OBSERVATION),), np.float32)
        self.observation_spaces = {a: observation for a in self.possible_agents}
        self.action_spaces = {a: gym.spaces.Discrete(len(self.grid)) for a in self.possible_agents}
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (len(STATE),), np.float32)

    def _initial_metric(self) -> float:
        """The initial model's validation metric, so round 1 earns a reward too."""
        _, outputs = self.backend.evaluate([], self.task.global_eval_units())
        self.backend.observe(0, validation_metrics(self.task.global_metrics(outputs)))
        return float(self.strategy.last_metric)  # type: ignore[arg-type]

    def _observe(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.cohort = self.schedule.cohort(self.round)
        obs = self.strategy.observations(self.cohort)
        state = self.strategy.global_state(obs, self.round)
        self.agents = [agent_id(int(h)) for h in self.cohort.hospitals]
        return dict(zip(self.agents, obs)), {a: {"state": state} for a in self.agents}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None and seed != self.config.seed:
            self.config = self.config.model_copy(update={"seed": seed})
            self.schedule = RoundSchedule(self.config, self.task)
        config = self.config
        self.strategy = _ActedFedMRL(config.strategy, config.rounds, config.clients_per_round(), config.seed)  # type: ignore[arg-type]
        initial = self.task.initial_params(seed_for(config.seed, Stream.MODEL_INIT))
        self.backend = InProcessBackend(self.task, self.strategy, build_pipeline(config, self.task), initial, config.seed)
        self.round = 1
        self.metric = self._initial_metric()
        return self._observe()

    def step(self, action_dict: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        self.strategy.chosen = {h: float(self.grid[action_dict[agent_id(int(h))]]) for h in self.cohort.hospitals}
        run_round(self.backend, self.task, self.round, self.cohort, scored=[])
        previous, self.metric = self.metric, float(self.strategy.last_metric)  # type: ignore[arg-type]
        reward = self.strategy.reward(self.metric, previous)
        acted = list(self.agents)
        done = self.round == self.config.rounds
        self.round += 1
        if done:
            self.agents = []
            obs, infos = {}, {}
        else:
            obs, infos = self._observe()
        return obs, {a: reward for a in acted}, {"__all__": done}, {"__all__": False}, infos
