"""Quarantine of bad updates: a hospital whose update is NaN/inf, or whose norm exceeds
`quarantine.max_norm`, is left out of that round's aggregate and the round goes on.

The worker screens each hospital's contribution before adding it to the exact fixed-point sum
(fedsim.engine.worker), so a quarantined hospital is simply not summed; its report carries the
reason (the `status` column of clients.parquet) and it keeps its state from before the round.
The server then renormalises (`kept_share`): strategies that fix their weights before training
sum weight_k * x_k with weights that add up to W over the cohort, so over the kept hospitals K

    total_K * W / sum_{k in K} weight_k

is the same weighted mean over K alone. That holds for FedAvg's sample shares (and FedProx,
FedBN, FedAdam/Yogi, FedAvgM), for FedNova (both sum_k p_k d_k and tau_eff = sum_k p_k a_k scale
by the same factor, so tau_eff * d is FedNova over K) and for SCAFFOLD's uniform 1/|S| (its
server step is then told |K| hospitals took part, as the strategy sees only the kept ones).
Strategies that weigh after training (FedMRL) weigh the kept hospitals' summaries only; robust
strategies receive only the kept updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from fedsim.errors import FedsimError
from fedsim.params import Params, is_trained
from fedsim.protocol import ClientReport, Instruction, LocalResult
from fedsim.schema import Strict

OK = "ok"
QUARANTINED = "quarantined"


class QuarantineConfig(Strict):
    """The `quarantine` section: `policy: skip` leaves a bad update out of the round (and says so
    on stderr); `policy: fail` stops the run at that round with one line naming the hospital."""

    policy: Literal["skip", "fail"] = "skip"
    max_norm: float | None = Field(None, gt=0, description="largest L2 norm of an update w_k - w_start (none: no bound)")


class QuarantineError(FedsimError):
    """An update was quarantined under `quarantine.policy: fail`."""


@dataclass(frozen=True)
class UpdateScreen:
    """What a worker checks of each hospital's update before summing it."""

    max_norm: float | None = None

    def verdict(self, sent: LocalResult, start: Params, local_keys: frozenset[str], contribution: dict[str, np.ndarray]) -> str:
        """OK, or why the update is quarantined."""
        for name, array in contribution.items():
            if not np.all(np.isfinite(array)):
                return f"quarantined: non-finite values in {name}"
        if self.max_norm is not None:
            squares = sum(
                float(np.sum(np.square(array.astype(np.float64) - start[name])))
                for name, array in sent.params.items()
                if is_trained(name, array) and name not in local_keys
            )
            norm = float(np.sqrt(squares))
            if not norm <= self.max_norm:
                return f"quarantined: update norm {norm:.3g} above quarantine.max_norm {self.max_norm:g}"
        return OK


def kept_share(instructions: Sequence[Instruction], kept: Sequence[Instruction]) -> float:
    """W / sum of the kept weights: the factor that makes the kept hospitals' weighted sum a
    weighted mean again (1 when nobody was quarantined)."""
    if len(kept) == len(instructions):
        return 1.0
    kept_weight = float(sum(i.weight for i in kept))
    return float(sum(i.weight for i in instructions)) / kept_weight if kept_weight else 0.0


def is_quarantined(status: str) -> bool:
    """A quarantine verdict (other statuses not OK come from the simulated clock: late, dropped out)."""
    return status.startswith(QUARANTINED)


#: Quarantined hospitals a round's notice names with their reasons; beyond, it counts them.
NAMED = 3


def quarantine_notice(round_index: int, reports: Sequence[ClientReport], policy: str) -> str | None:
    """The one stderr line for a round's quarantined hospitals (None if there were none), so a
    round of hundreds of hospitals says it once; under `fail`, stop with the first one."""
    quarantined = [report for report in reports if is_quarantined(report.status)]
    if not quarantined:
        return None
    first = quarantined[0]
    if policy == "fail":
        raise QuarantineError(f"round {round_index}: hospital {first.hospital} {first.status} "
                              "(quarantine.policy is fail; use skip to leave such updates out)")
    if len(quarantined) <= NAMED:
        named = "; ".join(f"hospital {report.hospital} {report.status}" for report in quarantined)
    else:
        named = (f"{len(quarantined)} of {len(reports)} hospitals quarantined, e.g. hospital {first.hospital}: "
                 f"{first.status.removeprefix(QUARANTINED + ': ')} (all: clients.parquet's status column)")
    kept = any(report.status == OK for report in reports)
    outcome = "left out of the aggregate" if kept else "no update was kept, so the global model is unchanged this round"
    return f"fedsim: round {round_index}: {named}; {outcome}"
