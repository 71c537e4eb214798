"""The `scheduling` section of a run config (used when `task: scheduling`).

Plain pydantic, no torch: the scheduling task's spec (fedsim.tasks.specs.scheduling) registers
this section with the config schema.
Defaults describe a mid-sized emergency department (see README, "Patient scheduling").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from fedsim.schema import Strict as _Strict

#: Acuity levels, 1 = most urgent (emergency triage convention); "high acuity" means 1..HIGH_ACUITY.
ACUITY_LEVELS = 5
HIGH_ACUITY = 2


def _per_acuity(values: list) -> list:
    if len(values) != ACUITY_LEVELS:
        raise ValueError(f"expected {ACUITY_LEVELS} values (acuity 1..{ACUITY_LEVELS}), got {len(values)}")
    return values


def _per_acuity_checked(values: list[float], what: str, allow_zero: bool = False) -> list[float]:
    """Five values (acuity 1..5), each positive (or non-negative with `allow_zero`)."""
    if any(v < 0 or (v == 0 and not allow_zero) for v in _per_acuity(values)):
        raise ValueError(f"expected {'non-negative' if allow_zero else 'positive'} {what}, got {values}")
    return values


def _range(values: list) -> list:
    if len(values) != 2 or values[0] > values[1]:
        raise ValueError(f"expected [low, high] with low <= high, got {values}")
    return values


# Mean arrivals per clock hour relative to the hospital's rate: a night trough and a late-morning peak (mean 1).
HOUR_PROFILE = [0.55, 0.5, 0.45, 0.45, 0.45, 0.5, 0.6, 0.8, 1.05, 1.3, 1.45, 1.5,
                1.5, 1.4, 1.35, 1.3, 1.3, 1.3, 1.3, 1.25, 1.15, 1.0, 0.85, 0.7]  # fmt: skip
# Monday .. Sunday: busiest after the weekend (mean 1).
DAY_PROFILE = [1.15, 1.05, 1.0, 1.0, 1.0, 0.9, 0.9]


class EnvConfig(_Strict):
    """Dynamics shared by every hospital (what differs between hospitals is in `profiles`).

    Time advances `step_minutes` per decision; an episode lasts `episode_hours` from a seeded
    start hour of the week. Arrivals at hour h of weekday d are Poisson with rate
    `rate * hour_profile[h] * day_profile[d]` per hour. A patient of acuity a enters queue
    `start_queue[a-1]` (0 = highest priority) and needs an exponential service time of mean
    `service_hours[a-1]`; after `boost_hours[q-1]` in queue q it moves up to queue q-1.
    A transferred patient reaches the other hospital `transfer_hours` later; a surge unit
    opened by the allocate action lasts `surge_hours`.
    """

    queues: int = Field(3, ge=2)
    # checked against `queues` even when left at their defaults
    start_queue: list[int] = Field([0, 0, 1, 2, 2], validate_default=True)
    boost_hours: list[float] = Field([1.0, 2.0], validate_default=True)
    service_hours: list[float] = [3.0, 2.5, 1.5, 1.0, 0.5]
    step_minutes: int = Field(6, ge=1, le=60)
    episode_hours: int = Field(48, ge=1)
    transfer_hours: float = Field(1.0, ge=0)
    surge_hours: float = Field(8.0, gt=0)
    hour_profile: list[float] = HOUR_PROFILE
    day_profile: list[float] = DAY_PROFILE

    @field_validator("start_queue")
    @classmethod
    def _queues_exist(cls, values: list[int], info: ValidationInfo) -> list[int]:
        _per_acuity(values)
        queues = info.data.get("queues", 3)
        if any(not 0 <= q < queues for q in values):
            raise ValueError(f"expected queue indices in 0..{queues - 1}, got {values}")
        return values

    @field_validator("boost_hours")
    @classmethod
    def _one_per_lower_queue(cls, values: list[float], info: ValidationInfo) -> list[float]:
        queues = info.data.get("queues", 3)
        if len(values) != queues - 1 or any(v <= 0 for v in values):
            raise ValueError(f"expected {queues - 1} positive values (one per queue below the top), got {values}")
        return values

    @field_validator("service_hours")
    @classmethod
    def _positive_per_acuity(cls, values: list[float]) -> list[float]:
        return _per_acuity_checked(values, "hours")

    @field_validator("step_minutes")
    @classmethod
    def _divides_an_hour(cls, value: int) -> int:
        if 60 % value:
            raise ValueError(f"expected a divisor of 60, got {value}")
        return value

    @field_validator("hour_profile", "day_profile")
    @classmethod
    def _profile(cls, values: list[float], info: ValidationInfo) -> list[float]:
        length = 24 if info.field_name == "hour_profile" else 7
        if len(values) != length or any(v < 0 for v in values):
            raise ValueError(f"expected {length} non-negative multipliers, got {values}")
        return values

    @property
    def steps_per_hour(self) -> int:
        return 60 // self.step_minutes

    def steps(self, hours: float) -> int:
        """A duration in whole steps (at least one step for a positive duration)."""
        return max(1, round(hours * self.steps_per_hour)) if hours > 0 else 0


class ProfilesConfig(_Strict):
    """How each hospital's profile is drawn from its own seed (the non-IID setting).

    Rate ~ U(arrival_rate); acuity mix ~ Dirichlet(acuity_concentration * acuity_mix);
    beds = ceil(bed_ratio_draw * offered load), where offered load = rate * mean service hours;
    staff = ceil(staff_ratio_draw * beds); equipment (needed by acuity 1-2) = ceil(equipment
    ratio draw * their offered load); surge units ~ uniform integer in surge_units.
    """

    arrival_rate: list[float] = [3.0, 8.0]
    acuity_mix: list[float] = [0.05, 0.15, 0.40, 0.30, 0.10]
    acuity_concentration: float = Field(30.0, gt=0)
    bed_ratio: list[float] = [0.9, 1.3]
    staff_ratio: list[float] = [0.85, 1.15]
    equipment_ratio: list[float] = [0.8, 1.4]
    surge_units: list[int] = [1, 3]

    @field_validator("arrival_rate", "bed_ratio", "staff_ratio", "equipment_ratio")
    @classmethod
    def _positive_range(cls, values: list[float]) -> list[float]:
        if _range(values)[0] <= 0:
            raise ValueError(f"expected positive values, got {values}")
        return values

    @field_validator("surge_units")
    @classmethod
    def _count_range(cls, values: list[int]) -> list[int]:
        if _range(values)[0] < 0:
            raise ValueError(f"expected non-negative counts, got {values}")
        return values

    @field_validator("acuity_mix")
    @classmethod
    def _distribution(cls, values: list[float]) -> list[float]:
        return _per_acuity_checked(values, "shares")


class RewardConfig(_Strict):
    """Weights of the per-step reward (fedsim.scheduling.reward has the formula).

    wait: per acuity-weighted patient-hour waiting; imbalance: per hour per patient of
    (longest - shortest queue); high_acuity_bonus: per completed acuity 1-2 case;
    over_utilisation: per resource unit in use above nominal capacity per hour;
    allocation_cost: per surge unit opened; transfer_cost: per transfer, on top of the
    patient's weighted transit time; acuity_weights: w(a) for acuity 1..5.
    """

    wait: float = Field(1.0, ge=0)
    imbalance: float = Field(0.1, ge=0)
    high_acuity_bonus: float = Field(1.0, ge=0)
    over_utilisation: float = Field(2.0, ge=0)
    allocation_cost: float = Field(2.0, ge=0)
    transfer_cost: float = Field(3.0, ge=0)
    acuity_weights: list[float] = [5.0, 4.0, 3.0, 2.0, 1.0]

    @field_validator("acuity_weights")
    @classmethod
    def _non_negative_per_acuity(cls, values: list[float]) -> list[float]:
        return _per_acuity_checked(values, "weights", allow_zero=True)


class DQNConfig(_Strict):
    """DQN hyperparameters (fedsim.scheduling.dqn). Local work per round is `train.epochs`
    (or its per-hospital draw) times `steps_per_epoch` environment steps."""

    steps_per_epoch: int = Field(480, ge=1)
    hidden: list[int] = [64, 64]
    lr: float = Field(5e-4, gt=0)
    gamma: float = Field(0.98, gt=0, lt=1)
    buffer_size: int = Field(20000, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_starts: int = Field(500, ge=0)
    train_frequency: int = Field(4, ge=1)
    target_update_steps: int = Field(500, ge=1)
    epsilon_start: float = Field(1.0, ge=0, le=1)
    epsilon_end: float = Field(0.05, ge=0, le=1)
    exploration_steps: int = Field(5000, ge=1)
    double_dqn: bool = True
    reward_scale: float = Field(0.1, gt=0)
    max_grad_norm: float = Field(10.0, gt=0)

    @field_validator("hidden")
    @classmethod
    def _layer_sizes(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError(f"expected one or more positive layer sizes, got {values}")
        return values


class SchedulingConfig(_Strict):
    """The scheduling task: `hospitals` sites, each scheduled by `policy`.

    policy "dqn" learns (federated by the configured strategy); "fifo", "priority" and "mlfq" are
    heuristics that train nothing (fedsim.scheduling.policies). `centralised: true` is the upper
    bound: one DQN learns from every hospital's environment at a single site (see
    fedsim.tasks.scheduling). `eval_episodes` seeded episodes score each hospital and the network.
    """

    hospitals: int = Field(10, ge=2)
    policy: Literal["dqn", "fifo", "priority", "mlfq"] = "dqn"
    centralised: bool = False
    eval_episodes: int = Field(2, ge=1)
    env: EnvConfig = EnvConfig()
    profiles: ProfilesConfig = ProfilesConfig()
    reward: RewardConfig = RewardConfig()
    dqn: DQNConfig = DQNConfig()

    @field_validator("centralised")
    @classmethod
    def _learning_policy(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("policy") != "dqn":
            raise ValueError(f"expected false unless policy is dqn (got policy {info.data.get('policy')!r})")
        return value
