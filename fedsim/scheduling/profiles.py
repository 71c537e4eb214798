"""What makes hospitals different: arrival rate, acuity mix and resources, drawn per hospital."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from fedsim.scheduling.config import ACUITY_LEVELS, HIGH_ACUITY, EnvConfig, ProfilesConfig
from fedsim.seeding import Stream, rng_for


@dataclass(frozen=True)
class HospitalProfile:
    """One hospital. `arrival_rate` is the mean arrivals per hour before the hour-of-day and
    day-of-week multipliers; `acuity_mix[a-1]` is the share of acuity-a patients. Every patient
    in service holds one bed and one staff slot; acuity 1-2 patients also hold one equipment unit.
    Up to `surge_units` extra bed+staff+equipment bundles can be open at once (the allocate action)."""

    arrival_rate: float
    acuity_mix: tuple[float, ...]
    beds: int
    staff: int
    equipment: int
    surge_units: int

    def __post_init__(self) -> None:
        if len(self.acuity_mix) != ACUITY_LEVELS or not math.isclose(sum(self.acuity_mix), 1.0, abs_tol=1e-9):
            raise ValueError(f"acuity_mix: expected {ACUITY_LEVELS} shares summing to 1, got {self.acuity_mix}")
        if self.arrival_rate < 0 or min(self.beds, self.staff, self.equipment) < 1 or self.surge_units < 0:
            raise ValueError(f"hospital profile: expected a non-negative rate and at least one of each resource, got {self}")


def sample_profile(config: ProfilesConfig, env: EnvConfig, rng: np.random.Generator) -> HospitalProfile:
    """One hospital's profile (ProfilesConfig documents the distributions)."""
    rate = float(rng.uniform(*config.arrival_rate))
    mix = rng.dirichlet(config.acuity_concentration * np.asarray(config.acuity_mix) / sum(config.acuity_mix))
    mix = mix / mix.sum()
    hours = np.asarray(env.service_hours)
    load = rate * float(mix @ hours)
    high_load = rate * float(mix[:HIGH_ACUITY] @ hours[:HIGH_ACUITY])
    beds = max(1, math.ceil(rng.uniform(*config.bed_ratio) * load))
    staff = max(1, math.ceil(rng.uniform(*config.staff_ratio) * beds))
    equipment = max(1, math.ceil(rng.uniform(*config.equipment_ratio) * high_load))
    surge = int(rng.integers(config.surge_units[0], config.surge_units[1] + 1))
    return HospitalProfile(rate, tuple(float(m) for m in mix), beds, staff, equipment, surge)


def sample_profiles(config: ProfilesConfig, env: EnvConfig, count: int, run_seed: int) -> list[HospitalProfile]:
    """Hospital h's profile comes from its own seed stream, so adding hospitals changes no other."""
    return [sample_profile(config, env, rng_for(run_seed, Stream.SCHEDULING_PROFILES, h)) for h in range(count)]


def profiles_table(profiles: list[HospitalProfile]) -> pa.Table:
    """partition.parquet for the scheduling task: one row per hospital."""
    rows = []
    for hospital, profile in enumerate(profiles):
        row = {"hospital": hospital, **asdict(profile)}
        mix = row.pop("acuity_mix")
        row.update({f"acuity_{a + 1}_share": share for a, share in enumerate(mix)})
        rows.append(row)
    return pa.Table.from_pylist(rows)
