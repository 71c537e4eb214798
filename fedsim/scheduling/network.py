"""A network of hospitals as an RLlib MultiAgentEnv (new API stack), where transfers are real.

Agents `hospital_0` .. `hospital_{N-1}` act together every step; each sees its own hospital
(the HospitalEnv observation) and earns its own reward (the same formula). A transfer sends the
head of the sender's highest non-empty queue to the least-loaded other hospital — fewest waiting
plus inbound patients per nominal bed, ties to the lowest index — where it joins the queue of its
acuity `transfer_hours` after the request, keeping its arrival time (its wait includes transit).
The sender pays the transfer charge; the receiver pays for the patient's waiting from then on.

All hospitals share one clock: reset(seed) draws the start hour of the week and one seed per
hospital, so a network episode is as reproducible as a single-hospital one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from fedsim.scheduling.config import EnvConfig, RewardConfig
from fedsim.scheduling.env import HospitalEnv, observe
from fedsim.scheduling.hospital import HOURS_PER_WEEK, Hospital, Patient
from fedsim.scheduling.metrics import EpisodeLog, Recorder
from fedsim.scheduling.policies import Policy
from fedsim.scheduling.profiles import HospitalProfile


class HospitalNetworkEnv(MultiAgentEnv):
    def __init__(self, profiles: list[HospitalProfile], env: EnvConfig, reward: RewardConfig) -> None:
        super().__init__()
        if len(profiles) < 2:
            raise ValueError(f"profiles: a network needs at least 2 hospitals, got {len(profiles)}")
        self.sites = [HospitalEnv(profile, env, reward) for profile in profiles]
        self.possible_agents = [f"hospital_{h}" for h in range(len(profiles))]
        self.agents = list(self.possible_agents)
        self.observation_spaces = {agent: site.observation_space for agent, site in zip(self.agents, self.sites)}
        self.action_spaces = {agent: site.action_space for agent, site in zip(self.agents, self.sites)}
        self.in_transit: list[tuple[int, int, Patient]] = []  # (due step, destination, patient)

    @property
    def hospitals(self) -> list[Hospital]:
        hospitals = [site.hospital for site in self.sites if site.hospital is not None]
        if len(hospitals) < len(self.sites):
            raise RuntimeError("HospitalNetworkEnv used before reset")
        return hospitals

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        start = int(self.np_random.integers(HOURS_PER_WEEK))
        seeds = self.np_random.integers(2**63 - 1, size=len(self.sites))
        observations, infos = {}, {}
        for agent, site, s in zip(self.agents, self.sites, seeds):
            observations[agent], infos[agent] = site.reset(seed=int(s), options={"start_hour": start})
        self.in_transit = []
        return observations, infos

    def step(self, action_dict: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        missing = [agent for agent in self.agents if agent not in action_dict]
        if missing:
            raise ValueError(f"action_dict: no action for {missing}")
        observations, rewards, infos = {}, {}, {}
        truncated = False
        for agent, site in zip(self.agents, self.sites):
            observations[agent], rewards[agent], _, truncated, infos[agent] = site.step(action_dict[agent])
        for sender, agent in enumerate(self.agents):  # destinations chosen once every hospital has stepped
            hospital = self.hospitals[sender]
            for patient in infos[agent]["transferred"]:
                due = hospital.now - 1 + hospital.transfer_steps
                self.in_transit.append((due, self._destination(sender), patient))
        for destination in self._deliver():
            agent, hospital = self.agents[destination], self.hospitals[destination]
            observations[agent] = observe(hospital)
            infos[agent]["action_mask"] = hospital.valid_actions()
        terminateds = {agent: False for agent in self.agents} | {"__all__": False}
        truncateds = {agent: truncated for agent in self.agents} | {"__all__": truncated}
        return observations, rewards, terminateds, truncateds, infos

    def _destination(self, sender: int) -> int:
        inbound = np.zeros(len(self.sites))
        for _, destination, _ in self.in_transit:
            inbound[destination] += 1
        loads = [
            ((h.num_waiting + inbound[i]) / h.profile.beds, i) for i, h in enumerate(self.hospitals) if i != sender
        ]
        return min(loads)[1]

    def _deliver(self) -> set[int]:
        """Queue the patients whose transit has ended; returns the hospitals that received any."""
        now = self.hospitals[0].now
        arrived = [(due, d, p) for due, d, p in self.in_transit if due <= now]
        self.in_transit = [(due, d, p) for due, d, p in self.in_transit if due > now]
        for _, destination, patient in arrived:
            self.hospitals[destination].receive(patient)
        return {destination for _, destination, _ in arrived}


def run_network_episode(network: HospitalNetworkEnv, policy: Policy, seed: int) -> list[EpisodeLog]:
    """One seeded episode with `policy` at every hospital; one EpisodeLog per hospital. Patients
    still in transit at the end count as waiting at their destination."""
    observations, _ = network.reset(seed=seed)
    hospitals = network.hospitals
    recorders = [Recorder.for_hospital(h, transfers_final=False) for h in hospitals]
    done = False
    while not done:
        batch = np.stack([observations[agent] for agent in network.agents])
        actions = policy(batch, hospitals)
        observations, rewards, _, truncateds, infos = network.step(dict(zip(network.agents, actions.tolist())))
        for recorder, agent in zip(recorders, network.agents):
            recorder.record(rewards[agent], infos[agent])
        done = truncateds["__all__"]
    return [
        recorder.finish(h.waiting() + [p for _, d, p in network.in_transit if d == i], h.now, h.dt)
        for i, (recorder, h) in enumerate(zip(recorders, hospitals))
    ]
