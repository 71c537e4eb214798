"""The `privacy` and `compression` config sections (validated before anything starts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Mapping

from pydantic import Field, model_validator

from fedsim.protocol import DP_SGD, FAIRNESS, GRADIENT_CORRECTION, PROXIMAL, SUBNETWORK
from fedsim.schema import Strict

if TYPE_CHECKING:
    from fedsim.config import Config

#: Strategies whose contribution is weight * (w_start + delta) or weight * delta for every shared
#: trained parameter and nothing else data-dependent, so the aggregate is a weighted sum of the
#: hospitals' (clipped, compressed) updates: the only kind DP and compression stages can reason about.
UPDATE_SUM_STRATEGIES = frozenset({"fedavg", "fedprox", "fedbn", "fedavgm", "fedadam", "fedyogi"})


def refuse_other_strategies(section: str, config: "Config", why: str) -> None:
    name = config.strategy.name
    if name not in UPDATE_SUM_STRATEGIES:
        supported = ", ".join(sorted(UPDATE_SUM_STRATEGIES))
        raise ValueError(f"{section}: strategy {name} is not supported ({why}); use one of {supported}")


class AdaptiveClippingConfig(Strict):
    """Adaptive clipping (Andrew et al. 2021) for central DP: `clip_norm` is the initial C, which
    then follows the `target_quantile` of the hospitals' update norms at geometric rate
    `learning_rate`; `count_noise` sigma_b is the noise std on the count of unclipped updates
    (default m / 20, the paper's choice, m the expected cohort; it must exceed noise_multiplier / 2)."""

    target_quantile: float = Field(0.5, gt=0, lt=1)
    learning_rate: float = Field(0.2, gt=0)
    count_noise: float | None = Field(None, gt=0)

    def count_noise_for(self, expected_cohort: float) -> float:
        return self.count_noise if self.count_noise is not None else expected_cohort / 20


class PrivacyConfig(Strict):
    """Differential privacy of a run (see README, Privacy).

    - `central`: client-level DP-FedAvg (McMahan et al. 2018): updates clipped to `clip_norm`,
      Gaussian noise of std noise_multiplier * clip_norm / m added once to the server's sum.
    - `local`: every hospital adds N(0, (noise_multiplier * clip_norm)^2) to its clipped update.
    - `dp_sgd`: sample-level DP-SGD (Opacus) in each hospital's local training.

    Give `noise_multiplier`, or `target_epsilon` alone (the noise multiplier is then calibrated
    so that the configured rounds spend exactly that budget), or both (the noise multiplier as
    given, and the run stops after the last round the budget affords). `adaptive_clipping`
    (central only) lets the clip norm follow a quantile of the update norms.
    """

    mechanism: Literal["central", "local", "dp_sgd"]
    clip_norm: float = Field(gt=0, description="C: L2 bound of a hospital's update (a sample's gradient for dp_sgd)")
    noise_multiplier: float | None = Field(None, gt=0)
    target_epsilon: float | None = None
    delta: float = 1e-5
    adaptive_clipping: AdaptiveClippingConfig | None = None

    @model_validator(mode="after")
    def _budget(self) -> "PrivacyConfig":
        if not 0 < self.delta < 1:
            raise ValueError(f"delta: expected 0 < delta < 1, got {self.delta}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ValueError(f"target_epsilon: expected epsilon > 0, got {self.target_epsilon}")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("noise_multiplier: give noise_multiplier or target_epsilon (or both)")
        if self.adaptive_clipping is not None and self.mechanism != "central":
            raise ValueError(f"adaptive_clipping: only with mechanism central, got {self.mechanism} (each hospital's "
                             "clipped bit would need its own local noise, which this accounting does not cover)")
        return self

    def requirements(self) -> Mapping[str, str]:
        return {DP_SGD: "privacy.mechanism dp_sgd"} if self.mechanism == "dp_sgd" else {}

    def check(self, config: "Config") -> None:
        if self.mechanism != "dp_sgd":
            refuse_other_strategies("privacy.mechanism", config, "its aggregate is not a weighted sum of clipped updates")
            return
        terms = sorted(set(config.strategy.requirements()) & {PROXIMAL, GRADIENT_CORRECTION, FAIRNESS})
        if terms:
            raise ValueError(f"privacy.mechanism: dp_sgd privatises per-sample loss gradients only; strategy {config.strategy.name} "
                             f"adds {terms[0]} to the local objective, which Opacus would drop")


class CompressionConfig(Strict):
    """Update compression:

    - `quantize`: unbiased stochastic uniform quantisation to `bits` bits per entry (QSGD-style);
    - `topk`: the `fraction` largest-magnitude entries of (update + residual), the rest kept as
      the hospital's error-feedback residual for its next round;
    - `federated_dropout`: each hospital receives, trains and sends a seeded sub-network with a
      `fraction` of the hidden units (conv channel groups) of every layer dropped (both ways).
    """

    scheme: Literal["quantize", "topk", "federated_dropout"]
    bits: int = Field(8, ge=1, le=16)
    fraction: float = Field(0.1, gt=0, le=1)

    @model_validator(mode="after")
    def _fraction(self) -> "CompressionConfig":
        if self.scheme == "federated_dropout" and not self.fraction < 1:
            raise ValueError(f"fraction: federated_dropout drops this fraction of units, expected below 1, got {self.fraction}")
        return self

    def requirements(self) -> Mapping[str, str]:
        return {SUBNETWORK: "compression.scheme federated_dropout"} if self.scheme == "federated_dropout" else {}

    def check(self, config: "Config") -> None:
        refuse_other_strategies("compression.scheme", config, "the server must rebuild the aggregate from compressed updates alone")
        if self.scheme == "federated_dropout":
            self._check_federated_dropout(config)
        if config.secure_aggregation is not None:
            raise ValueError("compression.scheme: cannot combine with secure_aggregation (masked vectors are uniform "
                             "64-bit words, which no compression shrinks, and top-k supports differ between hospitals)")

    def _check_federated_dropout(self, config: "Config") -> None:
        if config.secure_aggregation is not None:
            raise ValueError("compression.scheme: federated_dropout cannot combine with secure_aggregation (pairwise masks "
                             "cancel only on entries both neighbours send, so every hospital would have to send the full "
                             "masked vector, which saves nothing)")
        if config.privacy is not None and config.privacy.mechanism == "dp_sgd":
            raise ValueError("compression.scheme: federated_dropout cannot combine with privacy.mechanism dp_sgd "
                             "(Opacus' per-sample gradients do not know the sub-network)")
