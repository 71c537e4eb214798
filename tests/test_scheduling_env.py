"""The single-hospital MLFQ environment: arrivals, boosts, the reward formula, the invalid-action
rule and seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedsim.scheduling.config import EnvConfig, ProfilesConfig, RewardConfig
from fedsim.scheduling.env import HospitalEnv, observation_size
from fedsim.scheduling.hospital import Hospital, Patient
from fedsim.scheduling.profiles import HospitalProfile, profiles_table, sample_profiles

EVEN_MIX = (0.2, 0.2, 0.2, 0.2, 0.2)


def _profile(rate: float = 0.0, beds: int = 2, equipment: int = 1, surge_units: int = 1) -> HospitalProfile:
    return HospitalProfile(rate, EVEN_MIX, beds, beds, equipment, surge_units)


def _hospital(profile: HospitalProfile, **env: object) -> Hospital:
    return Hospital(profile, EnvConfig(**env), RewardConfig(), np.random.default_rng(0), start_hour=0)


def _ids(queue) -> list[int]:
    return [patient.arrival for patient in queue]  # the tests give each patient a distinct arrival


def test_arrival_counts_match_the_hour_and_weekday_profile() -> None:
    env_config = EnvConfig(episode_hours=4 * 168)
    profile = _profile(rate=6.0, beds=500, equipment=500)
    env = HospitalEnv(profile, env_config, RewardConfig())
    env.reset(seed=123, options={"start_hour": 0})
    counts = np.zeros(168)
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(0)
        counts[info["arrival_hour"]] += info["arrivals"]
    hours = np.arange(168)
    rate = 6.0 * np.asarray(env_config.hour_profile)[hours % 24] * np.asarray(env_config.day_profile)[hours // 24]
    expected = 4 * rate  # four weeks of each hour of the week
    assert _poisson_fit(counts, expected) > 0.001  # each of the 168 hours of the week
    assert _poisson_fit(counts.reshape(7, 24).sum(axis=0), expected.reshape(7, 24).sum(axis=0)) > 0.001  # hour of day
    assert _poisson_fit(counts.reshape(7, 24).sum(axis=1), expected.reshape(7, 24).sum(axis=1)) > 0.001  # weekday
    flat = np.full(168, expected.mean())
    assert _poisson_fit(counts, flat) < 1e-6  # the check tells a flat rate from the profile


def _poisson_fit(observed: np.ndarray, expected: np.ndarray) -> float:
    """p-value of Pearson's statistic for independent Poisson counts with known means (chi-square, one df per cell)."""
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return float(stats.chi2.sf(statistic, df=len(observed)))


def test_priority_boost_moves_patients_up_one_queue_at_the_threshold() -> None:
    hospital = _hospital(_profile(surge_units=0), boost_hours=[1.0, 2.0])  # 10 and 20 steps of 6 minutes
    assert hospital.boost_steps == [10, 20]
    low_a, low_b, low_late, medium = Patient(1, 5, 3, 0), Patient(2, 4, 3, 0), Patient(3, 5, 3, 5), Patient(4, 3, 3, 0)
    for queue, patient in [(2, low_a), (2, low_b), (2, low_late), (1, medium)]:
        hospital.enqueue(queue, patient)
    expected = {  # now -> (high, medium, low) arrival ids
        9: ([], [4], [1, 2, 3]),
        10: ([4], [], [1, 2, 3]),
        19: ([4], [], [1, 2, 3]),
        20: ([4], [1, 2], [3]),
        25: ([4], [1, 2, 3], []),
        29: ([4], [1, 2, 3], []),
        30: ([4, 1, 2], [3], []),
        35: ([4, 1, 2, 3], [], []),
    }
    for _ in range(35):
        assert hospital.step(hospital.allocate_action).invalid  # no surge units: nothing but time changes
        if hospital.now in expected:
            assert tuple(_ids(q) for q in hospital.queues) == expected[hospital.now], hospital.now
    assert low_a.entered == 30 and low_late.entered == 35  # the boost clock restarts in each new queue
    assert [p.arrival for p in hospital.waiting()] == [4, 1, 2, 3]  # waits still count from arrival


def test_reward_equals_the_documented_formula_on_a_hand_built_state() -> None:
    # dt = 0.1 h; default weights: wait 1, imbalance 0.1, bonus 1, over-utilisation 2, allocation 2,
    # transfer 3 (+ weighted 1 h transit); acuity weights 5, 4, 3, 2, 1.
    hospital = _hospital(_profile(beds=2, equipment=1, surge_units=1), boost_hours=[50.0, 50.0], transfer_hours=1.0)
    for queue, patient in [(0, Patient(0, 1, 1, 0)), (0, Patient(1, 2, 50, 0)), (1, Patient(2, 3, 50, 0)),
                           (2, Patient(3, 5, 50, 0)), (2, Patient(4, 4, 50, 0))]:  # fmt: skip
        hospital.enqueue(queue, patient)
    steps = [
        # (action, reward by hand)
        # admit the acuity-1 patient, whose 1-step service ends: waiting 4+3+1+2, queues [1,1,2], one high-acuity completion
        (0, -1.0 * 0.1 * 10 - 0.1 * 0.1 * (2 - 1) + 1.0),
        # admit acuity 2: waiting 3+1+2, queues [0,1,2]
        (0, -1.0 * 0.1 * 6 - 0.1 * 0.1 * 2),
        # open a surge unit (capacity 3 beds, 3 staff, 2 equipment)
        (3, -1.0 * 0.1 * 6 - 0.1 * 0.1 * 2 - 2.0),
        # admit acuity 3: 2 beds in use, nominal 2
        (1, -1.0 * 0.1 * 3 - 0.1 * 0.1 * 2),
        # admit acuity 5: 3 beds and 3 staff in use, one each above nominal
        (2, -1.0 * 0.1 * 2 - 0.1 * 0.1 * 1 - 2.0 * 0.1 * 2),
        # transfer the acuity-4 patient: charge 1.0 * 2 * 1 h + 3
        (4, -2.0 * 0.1 * 2 - (1.0 * 2 * 1.0 + 3.0)),
    ]
    for action, reward in steps:
        events = hospital.step(action)
        assert not events.invalid
        assert events.reward == pytest.approx(reward, abs=1e-12), action
    assert hospital.num_waiting == 0 and len(hospital.in_service) == 3


def test_invalid_actions_are_no_ops_that_only_advance_the_clock() -> None:
    hospital = _hospital(_profile(beds=3, equipment=1, surge_units=0))
    hospital.enqueue(0, Patient(0, 1, 100, 0))
    assert not hospital.step(0).invalid  # the acuity-1 patient takes the only equipment unit
    hospital.enqueue(0, Patient(1, 2, 5, 1))  # needs equipment too: cannot be admitted
    snapshot = lambda: ([_ids(q) for q in hospital.queues], list(hospital.in_service), list(hospital.surge))  # noqa: E731
    before = snapshot()
    for action in (0, 1, 2, hospital.allocate_action):  # head does not fit, empty, empty, no surge units
        now = hospital.now
        events = hospital.step(action)
        assert events.invalid and hospital.now == now + 1 and snapshot() == before
        assert events.reward == pytest.approx(-1.0 * 0.1 * 4 - 0.1 * 0.1 * 1)  # waiting cost only
    assert not hospital.step(hospital.transfer_action).invalid  # the head leaves
    assert hospital.step(hospital.transfer_action).invalid  # nothing left to transfer
    with pytest.raises(ValueError, match="action"):
        hospital.step(hospital.num_actions)


def test_any_action_sequence_runs_and_reports_invalid_ones() -> None:
    profile = sample_profiles(ProfilesConfig(), EnvConfig(), 1, run_seed=3)[0]
    env = HospitalEnv(profile, EnvConfig(episode_hours=24), RewardConfig())
    observation, _ = env.reset(seed=5)
    assert env.observation_space.contains(observation) and observation.shape == (observation_size(3),)
    rng = np.random.default_rng(0)
    invalid = 0
    mask = env.hospital.valid_actions()
    for _ in range(240):
        action = int(rng.integers(env.action_space.n))
        nothing_possible = env.hospital.num_waiting == 0 and len(env.hospital.surge) == profile.surge_units  # all marked valid
        observation, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(observation) and np.isfinite(reward) and not terminated
        assert info["invalid"] == (nothing_possible or not mask[action])  # the mask is the rule's complement
        invalid += info["invalid"]
        mask = info["action_mask"]
    assert truncated and 0 < invalid < 240


def _episode(seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    profile = sample_profiles(ProfilesConfig(), EnvConfig(), 2, run_seed=0)[1]
    env = HospitalEnv(profile, EnvConfig(episode_hours=24), RewardConfig())
    observations, rewards, events = [env.reset(seed=seed)[0]], [], []
    actions = np.random.default_rng(99).integers(env.action_space.n, size=240)
    for action in actions:
        observation, reward, _, _, info = env.step(int(action))
        observations.append(observation)
        rewards.append(reward)
        events.append((info["arrivals"], info["admitted"], info["transferred_waits"], info["invalid"]))
    return np.stack(observations), np.array(rewards), events


def test_episodes_are_bitwise_reproducible_from_the_seed() -> None:
    first, again, other = _episode(7), _episode(7), _episode(8)
    assert first[0].tobytes() == again[0].tobytes() and first[1].tobytes() == again[1].tobytes()
    assert first[2] == again[2]
    assert first[0].tobytes() != other[0].tobytes()


def test_profiles_are_drawn_per_hospital_from_the_seed() -> None:
    config, env = ProfilesConfig(), EnvConfig()
    ten = sample_profiles(config, env, 10, run_seed=1)
    assert sample_profiles(config, env, 10, run_seed=1) == ten
    assert sample_profiles(config, env, 4, run_seed=1) == ten[:4]  # a hospital's profile ignores the others
    assert sample_profiles(config, env, 10, run_seed=2) != ten
    rates = [p.arrival_rate for p in ten]
    assert all(3.0 <= r <= 8.0 for r in rates) and len(set(rates)) == 10
    assert len({p.beds for p in ten}) > 1 and len({p.acuity_mix for p in ten}) == 10
    table = profiles_table(ten).to_pylist()
    assert [row["hospital"] for row in table] == list(range(10))
    assert sum(table[0][f"acuity_{a}_share"] for a in range(1, 6)) == pytest.approx(1.0)
