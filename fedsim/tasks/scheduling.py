"""Patient scheduling at each hospital: a DQN (or a heuristic) on the hospital's own MLFQ environment.

A hospital's local work is `epochs` x `scheduling.dqn.steps_per_epoch` environment steps of DQN
(the "epochs" setting's equivalent here); its replay buffer, target network and exploration
schedule persist as hospital state; the online Q-network is the update the strategy aggregates.
Honours the plan's `epochs`, `mu` (FedProx) and `gradient_correction` (added to every Q-network
gradient before the Adam step).

- Heuristic policies (fifo, priority, mlfq) train nothing: the model passes through unchanged.
- `centralised: true` is the upper bound federation is measured against: every hospital ships its
  experience to one site. Hospital 0's slot plays that site: it steps every hospital's environment
  and learns one DQN from the pooled replay buffer; the other hospitals hold no training data
  (size 0), so FedAvg's weighted mean is exactly the site's network.

`eval.personalise_steps: k` fine-tunes a copy of the deployed model for k environment steps
(`fine_tune`) before the hospital's own episodes are scored again (personalised_*).

Evaluation: each hospital scores the model it would deploy on `eval_episodes` seeded episodes of
its own environment (hospital_eval.parquet); the global model is scored on as many seeded episodes
of the whole network (fedsim.scheduling.network, transfers simulated for real), one global
evaluation unit per network episode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from fedsim.params import Params
from fedsim.protocol import LocalPlan, LocalResult
from fedsim.scheduling.config import SchedulingConfig
from fedsim.scheduling.dqn import LearnerState, QNetwork, new_state, train_dqn
from fedsim.scheduling.env import HospitalEnv, observation_size
from fedsim.scheduling.hospital import action_count
from fedsim.scheduling.metrics import METRIC_NAMES, EpisodeLog, summarise
from fedsim.scheduling.policies import Policy, greedy, heuristic
from fedsim.scheduling.profiles import profiles_table, sample_profiles
from fedsim.scheduling.rollout import run_episode
from fedsim.seeding import Stream, seed_for
from fedsim.tasks.base import Task
from fedsim.tasks.worker_local import WorkerLocalTorch
from fedsim.torch_params import load_params, params_of

_GLOBAL, _LOCAL = 0, 1  # keys of the two evaluation seed streams


class SchedulingTask(WorkerLocalTorch, Task):
    worker_local = ("_networks",)
    keeps_hospital_state = True
    global_metric_names = METRIC_NAMES
    headline_metric = "acuity_weighted_wait"
    hospital_metric = "acuity_weighted_wait"
    higher_is_better = False

    def __init__(self, config: SchedulingConfig, run_seed: int) -> None:
        self.config = config
        self.run_seed = run_seed
        self.profiles = sample_profiles(config.profiles, config.env, config.hospitals, run_seed)
        self._device = torch.device("cpu")
        self._networks: tuple[QNetwork, QNetwork] | None = None  # (online, target), built lazily on each worker

    # ----- shape of the federation ---------------------------------------------------------
    @property
    def num_hospitals(self) -> int:
        return self.config.hospitals

    @property
    def _learns(self) -> bool:
        return self.config.policy == "dqn"

    def _sites(self, hospital: int) -> list[int]:
        """The hospitals whose environments `hospital`'s learner steps."""
        if not self.config.centralised:
            return [hospital]
        return list(range(self.num_hospitals)) if hospital == 0 else []

    def hospital_sizes(self) -> np.ndarray:
        """Transitions per local epoch (all hospitals equal, except under centralisation)."""
        per_epoch = self.config.dqn.steps_per_epoch
        return np.array([per_epoch * len(self._sites(h)) for h in range(self.num_hospitals)], dtype=np.int64)

    def step_samples(self) -> np.ndarray:
        """One environment step of every site the hospital's learner steps."""
        return np.array([len(self._sites(h)) for h in range(self.num_hospitals)], dtype=np.int64)

    def partition_table(self) -> pa.Table:
        return profiles_table(self.profiles)

    def use_device(self, device: str) -> None:
        self._device = torch.device(device)
        self._networks = None

    # ----- models --------------------------------------------------------------------------
    def _new_network(self) -> QNetwork:
        env = self.config.env
        return QNetwork(observation_size(env.queues), action_count(env.queues), self.config.dqn.hidden)

    def _placed(self) -> tuple[QNetwork, QNetwork]:
        if self._networks is None:
            self._networks = (self._new_network().to(self._device), self._new_network().to(self._device))
        return self._networks

    def initial_params(self, seed: int) -> Params:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return params_of(self._new_network())

    def new_module(self) -> QNetwork:
        return self._new_network()

    def _env(self, hospital: int) -> HospitalEnv:
        return HospitalEnv(self.profiles[hospital], self.config.env, self.config.reward)

    def _policy(self, params: Params) -> Policy:
        if not self._learns:
            return heuristic(self.config.policy)
        online, _ = self._placed()
        load_params(online, params)
        return greedy(online)

    # ----- local work ----------------------------------------------------------------------
    def train(self, hospital: int, params: Params, plan: LocalPlan, state: Any, seed: int) -> LocalResult:
        sites = self._sites(hospital)
        if not self._learns or not sites:
            return LocalResult(dict(params), 0, 0, {}, state)
        dqn, epochs = self.config.dqn, plan.epochs
        online, target = self._placed()
        queues = self.config.env.queues
        learner: LearnerState = state or new_state(dqn, params, observation_size(queues), action_count(queues), len(sites))
        iterations = epochs * dqn.steps_per_epoch if plan.max_steps is None else min(epochs * dqn.steps_per_epoch, plan.max_steps)
        trained, learner, metrics = train_dqn(
            dqn,
            online,
            target,
            params,
            learner,
            [self._env(site) for site in sites],
            iterations,
            seed,
            mu=plan.mu,
            correction=plan.gradient_correction,
        )
        return LocalResult(trained, iterations * len(sites), int(metrics["grad_steps"]), metrics, learner)

    def fine_tune(self, hospital: int, params: Params, steps: int, state: Any, seed: int) -> Params:
        """`steps` environment steps of the hospital's DQN (a gradient step each once past
        `dqn.learning_starts`) from a copy of its learner state: replay buffer, target network
        and exploration schedule go on where its training left them, and stay as they were."""
        sites = self._sites(hospital)
        if not self._learns or not sites or not steps:
            return dict(params)
        queues = self.config.env.queues
        learner = state or new_state(self.config.dqn, params, observation_size(queues), action_count(queues), len(sites))
        online, target = self._placed()
        tuned, _, _ = train_dqn(self.config.dqn, online, target, params, learner, [self._env(s) for s in sites], steps, seed)
        return tuned

    # ----- evaluation ----------------------------------------------------------------------
    def _eval_seed(self, stream_key: int, *keys: int) -> int:
        return seed_for(self.run_seed, Stream.SCHEDULING_EVAL, stream_key, *keys)

    def evaluate_hospital(self, hospital: int, params: Params, state: Any, batch_statistics: bool = False) -> dict[str, float]:
        policy, env = self._policy(params), self._env(hospital)
        logs = [run_episode(env, policy, self._eval_seed(_LOCAL, hospital, e)) for e in range(self.config.eval_episodes)]
        return summarise(logs, self.config.reward.acuity_weights)

    def global_eval_units(self) -> int:
        return self.config.eval_episodes

    def evaluate_unit(self, unit: int, params: Params, batch_statistics: bool = False) -> list[EpisodeLog]:
        # RLlib takes seconds to import: the driver and classification runs never need it
        from fedsim.scheduling.network import HospitalNetworkEnv, run_network_episode

        network = HospitalNetworkEnv(self.profiles, self.config.env, self.config.reward)
        return run_network_episode(network, self._policy(params), self._eval_seed(_GLOBAL, unit))

    def global_metrics(self, outputs: list[list[EpisodeLog]]) -> dict[str, float]:
        return summarise([log for unit in outputs for log in unit], self.config.reward.acuity_weights)
