"""The `privacy` and `compression` sections as pipeline stages, appended after the `pipeline` list.

Order on the hospital: for central DP, compression first and then the clip (so what leaves has
norm <= C whatever the compressor did, and the residual of top-k never leaves); for local DP,
clip and noise first and then compression (post-processing of a private update). Server halves
run in the reverse order: central DP's noise goes on the sum before federated dropout rescales it.

The accountant (Opacus, seconds to import) is imported only when a run has a privacy section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsim.errors import ConfigError
from fedsim.params import is_statistic
from fedsim.pipeline.base import UpdateStage
from fedsim.privacy.compression import Quantize, TopK
from fedsim.privacy.dp import AdaptiveClipping, CentralDP, LocalDP
from fedsim.privacy.federated_dropout import FederatedDropout

if TYPE_CHECKING:
    from fedsim.config import Config
    from fedsim.tasks.base import Task


def section_stages(config: "Config", task: "Task") -> list[UpdateStage]:
    compression = _compression_stages(config, task)
    privacy = config.privacy
    if privacy is None or privacy.mechanism == "dp_sgd":
        return compression
    from fedsim.privacy.ledger import run_noise_multiplier

    refuse_shared_statistics(config, task)
    sigma = run_noise_multiplier(config, task.hospital_sizes())
    if privacy.mechanism == "central":
        return compression + [central_dp(config, sigma)]
    return [LocalDP(privacy.clip_norm, sigma)] + compression


def central_dp(config: "Config", sigma: float) -> CentralDP:
    """Central DP at the run's noise multiplier sigma; with adaptive clipping the update sum's
    share of it (the clipped count spends the rest; fedsim.privacy.accounting)."""
    privacy, expected = config.privacy, float(config.clients_per_round())
    adaptive = privacy.adaptive_clipping
    if adaptive is None:
        return CentralDP(privacy.clip_norm, sigma, expected, config.seed)
    from fedsim.privacy.accounting import update_noise_multiplier

    rule = AdaptiveClipping(adaptive.target_quantile, adaptive.learning_rate, adaptive.count_noise_for(expected))
    try:
        update_sigma = update_noise_multiplier(sigma, rule.count_noise)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return CentralDP(privacy.clip_norm, update_sigma, expected, config.seed, rule)


def _compression_stages(config: "Config", task: "Task") -> list[UpdateStage]:
    spec = config.compression
    if spec is None:
        return []
    if spec.scheme == "federated_dropout":
        return [federated_dropout(config, task)]
    return [Quantize(spec.bits) if spec.scheme == "quantize" else TopK(spec.fraction)]


def federated_dropout(config: "Config", task: "Task") -> FederatedDropout:
    from fedsim.privacy.model_units import unit_layers  # torch: the driver's side only

    module = task.new_module()
    shapes = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    central = config.privacy is not None and config.privacy.mechanism == "central"
    layers = unit_layers(module, config.model.name)
    return FederatedDropout(layers, shapes, config.compression.fraction, config.seed, expected_denominator=central)


def refuse_shared_statistics(config: "Config", task: "Task") -> None:
    """Client-level DP covers the trained parameters only: normalisation running statistics
    (BatchNorm) that leave the hospitals would be averaged without noise."""
    local = config.strategy.build(config, task).local_keys
    shared = sorted(name for name in task.initial_params(config.seed) if is_statistic(name) and name not in local)
    if shared:
        raise ConfigError(
            f"privacy.mechanism: model {config.model.name} shares normalisation statistics ({shared[0]}, ...) "
            "that DP noise does not cover; use model.name: small_cnn_gn (GroupNorm) or strategy: fedbn"
        )
