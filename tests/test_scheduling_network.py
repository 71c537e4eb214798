"""The hospital network (RLlib MultiAgentEnv): transfers arrive after the delay, at the least
loaded hospital, and network episodes are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.scheduling.config import EnvConfig, ProfilesConfig, RewardConfig
from fedsim.scheduling.hospital import Patient
from fedsim.scheduling.metrics import summarise
from fedsim.scheduling.network import HospitalNetworkEnv, run_network_episode
from fedsim.scheduling.policies import heuristic
from fedsim.scheduling.profiles import HospitalProfile, sample_profiles

EVEN_MIX = (0.2, 0.2, 0.2, 0.2, 0.2)


def _quiet_network(count: int, transfer_hours: float) -> HospitalNetworkEnv:
    """Hospitals without arrivals (so only the test's patients move) and without surge units."""
    profiles = [HospitalProfile(0.0, EVEN_MIX, 4, 4, 2, 0) for _ in range(count)]
    network = HospitalNetworkEnv(profiles, EnvConfig(transfer_hours=transfer_hours, episode_hours=10), RewardConfig())
    network.reset(seed=0)
    return network


def test_a_transfer_reaches_the_other_hospital_after_the_delay() -> None:
    network = _quiet_network(2, transfer_hours=0.5)  # 5 steps of 6 minutes
    sender, receiver = network.hospitals
    patient = Patient(arrival=0, acuity=3, service=2, entered=0)
    sender.enqueue(1, patient)
    noop = sender.allocate_action  # no surge units: a no-op everywhere
    observations, rewards, _, _, infos = network.step({"hospital_0": sender.transfer_action, "hospital_1": noop})
    assert infos["hospital_0"]["transferred"] == [patient] and sender.num_waiting == 0
    assert rewards["hospital_0"] == pytest.approx(-(1.0 * 3 * 0.5 + 3.0))  # the sender pays the charge
    for _ in range(3):  # steps 2..4: still in transit
        observations, *_ = network.step({"hospital_0": noop, "hospital_1": noop})
        assert receiver.num_waiting == 0 and observations["hospital_1"][1] == 0.0
    observations, rewards, *_ = network.step({"hospital_0": noop, "hospital_1": noop})
    assert receiver.now == 5 and list(receiver.queues[1]) == [patient]  # queue of its acuity, 5 steps after the request
    assert patient.entered == 5 and patient.arrival == 0
    assert observations["hospital_1"][1] == pytest.approx(1 / 10)  # the receiver sees it at once
    _, rewards, _, _, infos = network.step({"hospital_0": noop, "hospital_1": 1})
    assert infos["hospital_1"]["admitted"] == [(3, pytest.approx(0.5))]  # its wait includes the transit


def test_transfers_go_to_the_least_loaded_hospital() -> None:
    network = _quiet_network(3, transfer_hours=1.0)
    busy, _, quieter = network.hospitals
    for i in range(3):
        network.hospitals[1].enqueue(2, Patient(10 + i, 5, 1, 0))
    quieter.enqueue(2, Patient(20, 5, 1, 0))
    busy.enqueue(0, Patient(0, 1, 1, 0))
    busy.enqueue(0, Patient(1, 1, 1, 0))
    noop = busy.allocate_action
    network.step({"hospital_0": busy.transfer_action, "hospital_1": noop, "hospital_2": noop})
    assert [destination for _, destination, _ in network.in_transit] == [2]
    network.step({"hospital_0": busy.transfer_action, "hospital_1": noop, "hospital_2": noop})
    # hospital 2 now has one waiting and one inbound patient: 2 per 4 beds, still below hospital 1's 3
    assert [destination for _, destination, _ in network.in_transit] == [2, 2]


def test_network_episodes_are_reproducible_and_use_the_rllib_api() -> None:
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    profiles = sample_profiles(ProfilesConfig(), EnvConfig(), 3, run_seed=0)
    network = HospitalNetworkEnv(profiles, EnvConfig(episode_hours=12), RewardConfig())
    check_multiagent_environments(network)
    first = run_network_episode(network, heuristic("mlfq"), seed=4)
    again = run_network_episode(network, heuristic("mlfq"), seed=4)
    assert len(first) == 3
    for a, b in zip(first, again):
        assert a.wait.tobytes() == b.wait.tobytes() and a.episode_return == b.episode_return
    metrics = summarise(first, RewardConfig().acuity_weights)
    assert np.isfinite(metrics["acuity_weighted_wait"]) and metrics["transfers"] >= 0
    with pytest.raises(ValueError, match="hospital_2"):
        network.step({"hospital_0": 0, "hospital_1": 0})
