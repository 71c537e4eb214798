"""The `privacy` and `compression` sections as pipeline stages, appended after the `pipeline` list.

Order on the hospital: for central DP, compression first and then the clip (so what leaves has
norm <= C whatever the compressor did, and the residual of top-k never leaves); for local DP,
clip and noise first and then compression (post-processing of a private update).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsim.errors import ConfigError
from fedsim.params import is_statistic
from fedsim.pipeline.base import UpdateStage
from fedsim.privacy.compression import Quantize, TopK
from fedsim.privacy.dp import CentralDP, LocalDP
from fedsim.privacy.ledger import run_noise_multiplier

if TYPE_CHECKING:
    from fedsim.config import Config
    from fedsim.tasks.base import Task


def section_stages(config: "Config", task: "Task") -> list[UpdateStage]:
    compression = _compression_stages(config)
    privacy = config.privacy
    if privacy is None or privacy.mechanism == "dp_sgd":
        return compression
    refuse_shared_statistics(config, task)
    sigma = run_noise_multiplier(config, task.hospital_sizes())
    if privacy.mechanism == "central":
        return compression + [CentralDP(privacy.clip_norm, sigma, float(config.clients_per_round()), config.seed)]
    return [LocalDP(privacy.clip_norm, sigma)] + compression


def _compression_stages(config: "Config") -> list[UpdateStage]:
    spec = config.compression
    if spec is None:
        return []
    return [Quantize(spec.bits) if spec.scheme == "quantize" else TopK(spec.fraction)]


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
