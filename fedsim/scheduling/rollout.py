"""Play one seeded evaluation episode of a single hospital under a policy."""

from __future__ import annotations

import numpy as np

from fedsim.scheduling.env import HospitalEnv
from fedsim.scheduling.metrics import EpisodeLog, Recorder
from fedsim.scheduling.policies import Policy


def run_episode(env: HospitalEnv, policy: Policy, seed: int) -> EpisodeLog:
    observation, _ = env.reset(seed=seed)
    hospital = env.hospital
    assert hospital is not None
    recorder = Recorder.for_hospital(hospital, transfers_final=True)
    truncated = False
    while not truncated:
        action = int(policy(observation[np.newaxis], [hospital])[0])
        observation, reward, _, truncated, info = env.step(action)
        recorder.record(reward, info)
    return recorder.finish(hospital.waiting(), hospital.now, hospital.dt)
