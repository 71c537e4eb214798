"""Each hospital's system profile, drawn from the run seed: its tier's compute speed, link speeds,
hours online and dropout probability.

Tier sizes follow the shares (largest remainders, so they add up to the federation); which
hospital lands in which tier is a seeded permutation (stream SYSTEM_PROFILES), so profiles are
independent of the data partition and identical on any number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fedsim.seeding import Stream, rng_for
from fedsim.systems.config import SystemsConfig

HOUR = 3600.0


def tier_counts(shares: np.ndarray, num_hospitals: int) -> np.ndarray:
    """Hospitals per tier: floor(share * n), the remainder to the largest fractional parts (ties: first tier)."""
    exact = shares * num_hospitals
    counts = np.floor(exact).astype(np.int64)
    left = num_hospitals - int(counts.sum())
    order = sorted(range(len(shares)), key=lambda t: (-(exact[t] - counts[t]), t))
    counts[order[:left]] += 1
    return counts


@dataclass(frozen=True)
class SystemProfiles:
    """Per-hospital arrays (index = hospital id)."""

    tier_names: tuple[str, ...]
    tier: np.ndarray  # int, index into tier_names
    samples_per_second: np.ndarray
    uplink: np.ndarray  # bytes per second
    downlink: np.ndarray
    online_start: np.ndarray  # hour of day
    online_end: np.ndarray
    dropout: np.ndarray

    @classmethod
    def draw(cls, spec: SystemsConfig, num_hospitals: int, run_seed: int) -> "SystemProfiles":
        counts = tier_counts(np.array([t.share for t in spec.tiers]), num_hospitals)
        tier = np.empty(num_hospitals, dtype=np.int64)
        tier[rng_for(run_seed, Stream.SYSTEM_PROFILES).permutation(num_hospitals)] = np.repeat(np.arange(len(counts)), counts)

        def column(field: str) -> np.ndarray:
            return np.array([getattr(t, field) for t in spec.tiers], dtype=np.float64)[tier]

        hours = np.array([t.online for t in spec.tiers], dtype=np.float64)[tier]
        return cls(tuple(t.name for t in spec.tiers), tier, column("samples_per_second"), column("uplink"),
                   column("downlink"), hours[:, 0], hours[:, 1], column("dropout"))

    def online(self, hour: float) -> np.ndarray:
        """Which hospitals are online at `hour` of the day (a window start > end wraps past midnight)."""
        start, end = self.online_start, self.online_end
        inside = (start <= hour) & (hour < end)
        wrapped = (start > end) & ((hour >= start) | (hour < end))
        return inside | wrapped

    def table(self) -> pa.Table:
        """systems.parquet: one row per hospital."""
        return pa.table({
            "hospital": np.arange(len(self.tier)),
            "tier": [self.tier_names[t] for t in self.tier],
            "samples_per_second": self.samples_per_second,
            "uplink_bytes_per_second": self.uplink,
            "downlink_bytes_per_second": self.downlink,
            "online_from_hour": self.online_start,
            "online_until_hour": self.online_end,
            "dropout": self.dropout,
        })


def hour_of_day(start_hour: float, clock: float) -> float:
    """The hour of the day `clock` simulated seconds after the run started at `start_hour`."""
    return float((start_hour + clock / HOUR) % 24.0)
