"""A single hospital as a gymnasium environment (what each hospital's DQN trains on).

How the single-hospital env models the rest of the network: a transfer removes the head of the
highest non-empty queue for good, as if another hospital with room took the patient after the
transfer delay. The sender pays the transfer charge of the reward (the patient's acuity-weighted
transit time plus `transfer_cost`), and the patient's waiting time is recorded as the time waited
here plus the delay. fedsim.scheduling.network simulates the real destination instead.

Episodes run `episode_hours` from a start hour of the week drawn from the reset seed (or given as
`options={"start_hour": h}`); they end by truncation only. Same seed, same actions: bitwise the
same episode, because the reset seed drives all of the env's randomness. Infos carry
`action_mask`, the actions that would take effect now (Hospital.valid_actions), for learners
that mask invalid actions.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from fedsim.scheduling.config import ACUITY_LEVELS, EnvConfig, RewardConfig
from fedsim.scheduling.hospital import HOURS_PER_WEEK, Hospital, StepEvents, action_count
from fedsim.scheduling.profiles import HospitalProfile

QUEUE_SCALE = 10.0  # patients: queue lengths and the arrival forecast are divided by this
WAIT_SCALE_HOURS = 4.0


def observation_size(queues: int) -> int:
    return 4 * queues + 9


def observe(hospital: Hospital) -> np.ndarray:
    """The agent's view, float32 and roughly in [-1, a few]:

    per queue: length / 10, mean acuity / 5, the head's wait / 4 h, whether the head fits now;
    free beds, staff and equipment as fractions of current capacity, surge units left as a
    fraction; sin/cos of the hour of day and of the time of week; next hour's expected arrivals / 10.
    """
    lengths, acuity, head_wait, head_fits = [], [], [], []
    for queue, acuity_sum in zip(hospital.queues, hospital.acuity_sums):
        lengths.append(len(queue) / QUEUE_SCALE)
        acuity.append(acuity_sum / (len(queue) * ACUITY_LEVELS) if queue else 0.0)
        head_wait.append((hospital.now - queue[0].arrival) * hospital.dt / WAIT_SCALE_HOURS if queue else 0.0)
        head_fits.append(float(bool(queue) and hospital.fits(queue[0])))
    free = [max(0.0, (c - u) / c) for u, c in zip(hospital.used(), hospital.capacity())]
    units = hospital.profile.surge_units
    surge_left = (units - len(hospital.surge)) / units if units else 0.0
    hour = hospital.hour_of_week() + (hospital.now % hospital.steps_per_hour) * hospital.dt
    day_angle, week_angle = 2 * math.pi * hour / 24, 2 * math.pi * hour / HOURS_PER_WEEK
    clock = [math.sin(day_angle), math.cos(day_angle), math.sin(week_angle), math.cos(week_angle)]
    features = [*lengths, *acuity, *head_wait, *head_fits, *free, surge_left, *clock, hospital.forecast() / QUEUE_SCALE]
    return np.asarray(features, dtype=np.float32)


def step_info(hospital: Hospital, events: StepEvents) -> dict[str, Any]:
    """What a step reports besides the reward: events for metrics and tests."""
    return {
        "invalid": events.invalid,
        "admitted": [(p.acuity, wait * hospital.dt) for p, wait in zip(events.admitted, events.waits)],
        "transferred": events.transferred,
        "transferred_waits": [(p.acuity, (events.start - p.arrival) * hospital.dt) for p in events.transferred],
        "completed": events.completed,
        "arrivals": events.arrivals,
        "arrival_hour": events.arrival_hour,
        "busy_beds": hospital.used()[0],
        "action_mask": hospital.valid_actions(),
    }


class HospitalEnv(gym.Env):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, profile: HospitalProfile, env: EnvConfig, reward: RewardConfig) -> None:
        self.profile = profile
        self.config = env
        self.reward_weights = reward
        self.episode_steps = env.episode_hours * env.steps_per_hour
        self.observation_space = gym.spaces.Box(-1.0, np.inf, shape=(observation_size(env.queues),), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(action_count(env.queues))
        self.hospital: Hospital | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = (options or {}).get("start_hour")
        if start is None:
            start = int(self.np_random.integers(HOURS_PER_WEEK))
        self.hospital = Hospital(self.profile, self.config, self.reward_weights, self.np_random, int(start))
        return observe(self.hospital), {"action_mask": self.hospital.valid_actions()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.hospital is None:
            raise RuntimeError("HospitalEnv.step called before reset")
        hospital = self.hospital
        events = hospital.step(int(action))
        truncated = hospital.now >= self.episode_steps
        return observe(hospital), float(events.reward), False, truncated, step_info(hospital, events)
