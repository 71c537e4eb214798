"""Time to target: the first round (and the simulated time) at which a run's metric reaches a
target, e.g. `global_balanced_accuracy>=0.8` or `global_acuity_weighted_wait<=2.5`, or "not
reached". With a systems section the time is the simulated clock (rounds.parquet `sim_clock`),
the axis that matters when hospitals are slow or late; without one, only rounds are reported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from fedsim.errors import ConfigError

HOUR = 3600.0
_PATTERN = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(>=|<=|=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Target:
    metric: str  # a rounds.parquet column
    value: float
    at_most: bool  # True: reached when metric <= value (a wait, a loss); else when >=

    def met(self, value: Any) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return value <= self.value if self.at_most else value >= self.value

    def __str__(self) -> str:
        return f"{self.metric} {'<=' if self.at_most else '>='} {self.value:g}"


@dataclass(frozen=True)
class Reached:
    round: int
    sim_hours: float  # NaN without a systems section


def parse_target(text: str) -> Target:
    """METRIC>=VALUE, METRIC<=VALUE, or METRIC=VALUE (meaning >=)."""
    match = _PATTERN.match(text)
    if match is None:
        raise ConfigError(f"--target {text}: expected METRIC=VALUE, METRIC>=VALUE or METRIC<=VALUE, "
                          "e.g. global_balanced_accuracy=0.8")
    metric, operator, value = match.groups()
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--target {text}: {value!r} is not a number") from None
    return Target(metric, number, operator == "<=")


def time_to_target(rows: Sequence[dict[str, Any]], target: Target, source: str = "rounds.parquet") -> Reached | None:
    """The first round (rows in any order) whose metric meets the target, or None."""
    if rows and target.metric not in rows[0]:
        columns = ", ".join(sorted(name for name in rows[0] if name.startswith("global_")))
        raise ConfigError(f"--target: {source} has no column {target.metric} (global metrics: {columns})")
    for row in sorted(rows, key=lambda row: row["round"]):
        if target.met(row[target.metric]):
            return Reached(int(row["round"]), float(row.get("sim_clock", math.nan)) / HOUR)
    return None


def describe(target: Target, reached: Reached | None, rounds: int) -> str:
    """One line for a report."""
    if reached is None:
        return f"target {target}: not reached in {rounds} rounds"
    when = "" if math.isnan(reached.sim_hours) else f", {reached.sim_hours:.3g} simulated hours"
    return f"target {target}: reached at round {reached.round}{when}"

