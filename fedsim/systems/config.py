"""The `systems` config section: hospital tiers and how a synchronous round treats stragglers.

Absent (the default), every sampled hospital is online, never drops and is never late: runs are
bit for bit those without systems realism.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from fedsim.schema import LISTED, Strict

if TYPE_CHECKING:
    from fedsim.config import Config

MB = 1_000_000.0


class TierConfig(Strict):
    """One kind of hospital: `share` of the federation, local compute in training samples per
    second (relative to the machine), link speeds in bytes per second, the hours of the day it
    is online (`online: [start, end)`, wrapping past midnight when start > end; [0, 24] always),
    and the probability that it drops out during a round it started."""

    name: str
    share: float = Field(gt=0, le=1)
    samples_per_second: float = Field(gt=0)
    uplink: float = Field(gt=0, description="bytes per second, hospital -> server")
    downlink: float = Field(gt=0, description="bytes per second, server -> hospital")
    online: Annotated[tuple[float, float], LISTED] = (0.0, 24.0)
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _hours(self) -> "TierConfig":
        start, end = self.online
        if not (0 <= start <= 24 and 0 <= end <= 24) or start == end:
            raise ValueError(f"online: expected [start, end) hours of the day in [0, 24], start != end, got {list(self.online)}")
        return self


#: Built-in tiers: a teaching hospital with GPUs and fibre, a regional hospital, a rural clinic.
DEFAULT_TIERS = (
    TierConfig(name="teaching", share=0.2, samples_per_second=2000.0, uplink=12.5 * MB, downlink=12.5 * MB, online=(0, 24), dropout=0.01),
    TierConfig(name="regional", share=0.5, samples_per_second=200.0, uplink=2.5 * MB, downlink=6.25 * MB, online=(6, 22), dropout=0.05),
    TierConfig(name="rural", share=0.3, samples_per_second=20.0, uplink=0.5 * MB, downlink=1.25 * MB, online=(8, 18), dropout=0.1),
)


class SystemsConfig(Strict):
    """System heterogeneity of a run (see README, Systems).

    - `tiers`: the kinds of hospital (shares add up to 1); each hospital's tier is drawn from the
      run seed.
    - `start_hour`: the simulated clock's hour of day when round 1 starts.
    - `deadline`: seconds a synchronous round waits at most; `stragglers` says what a hospital
      that would miss it does: `drop` (its update is left out) or `partial` (it runs only the
      local steps that fit, FedProx-style, and is kept).
    - `over_selection`: sample ceil(k * (1 + over_selection)) hospitals and keep the first k
      (k = sampling.clients_per_round) to arrive.
    """

    tiers: Annotated[tuple[TierConfig, ...], LISTED] = DEFAULT_TIERS
    start_hour: float = Field(9.0, ge=0, lt=24)
    deadline: float | None = Field(None, gt=0, description="seconds; none: wait for every hospital that did not drop out")
    stragglers: Literal["drop", "partial"] = "drop"
    over_selection: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "SystemsConfig":
        if not self.tiers:
            raise ValueError("tiers: expected at least one tier")
        names = [tier.name for tier in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tiers: expected distinct names, got {names}")
        total = sum(tier.share for tier in self.tiers)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"tiers: expected shares adding up to 1, got {total:g}")
        if self.stragglers == "partial" and self.deadline is None:
            raise ValueError("stragglers is partial, which needs a deadline to fit the local steps into (set systems.deadline)")
        return self

    def check(self, config: "Config") -> None:
        """Refuse combinations the rest of the config cannot honour."""
        privacy, secure = config.privacy, config.secure_aggregation
        if secure is not None and secure.dropout > 0:
            raise ValueError("secure_aggregation.dropout: with a systems section, dropouts come from the tiers' dropout "
                             "(secure aggregation recovers exactly those); set secure_aggregation.dropout to 0")
        if self.over_selection > 0 and config.sampling.scheme == "poisson":
            raise ValueError("systems.over_selection: needs a cohort of fixed size k to over-select; sampling.scheme poisson has none")
        if self.over_selection > 0 and privacy is not None and privacy.mechanism == "central":
            raise ValueError("systems.over_selection: central DP's accountant assumes each hospital is sampled with rate "
                             "clients_per_round / hospitals; over-selection samples more")


def check_sampling(config: "Config") -> None:
    """Sampling schemes that need the systems section, or break the DP accountant's assumption."""
    scheme, privacy = config.sampling.scheme, config.privacy
    if scheme == "available" and config.systems is None:
        raise ValueError("sampling.scheme: available samples among the hospitals online now, which needs a systems section")
    if scheme in ("proportional", "available") and privacy is not None and privacy.mechanism == "central":
        raise ValueError(f"sampling.scheme: {scheme} gives hospitals unequal sampling rates, but central DP's accountant "
                         "assumes every hospital is sampled with rate clients_per_round / hospitals (use poisson or fixed)")
