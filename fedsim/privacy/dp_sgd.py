"""Sample-level DP-SGD (Abadi et al. 2016) in a hospital's local training, through Opacus.

Each local step draws a Poisson batch (every sample with probability q = 1 / ceil(n / B), Opacus'
UniformWithReplacementSampler), computes per-sample gradients (GradSampleModule), clips each to
L2 norm C and adds N(0, sigma^2 C^2) to their sum before dividing by the expected batch size B
(DPOptimizer):

    g = (1/B) * [ sum_{i in batch} g_i * min(1, C / ||g_i||) + N(0, sigma^2 C^2 I) ].

Accounting: fedsim.privacy.accounting (q and ceil(n / B) steps per local epoch). A drawn empty
batch is skipped (probability about exp(-B)).

Opacus is imported where it is used: it adds about 1.7 s to the start of every worker, and only
runs with DP-SGD need it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from fedsim.errors import ConfigError


# GradSampleModule's hooks on the first layer fire although the images need no gradient: harmless.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")


@dataclass(frozen=True)
class DPSGD:
    """The task setting: how every hospital's local SGD is made private."""

    noise_multiplier: float
    clip_norm: float

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, count: int, batch_size: int, seed: int) -> "PrivateTraining":
        return PrivateTraining(self, model, optimizer, count, batch_size, seed)


def dp_sgd_batches(size: int, batch_size: int) -> int:
    """Batches per local epoch of DP-SGD: Opacus' Poisson sampler at rate 1 / this draws this
    many batches of expected size `batch_size`."""
    return max(1, math.ceil(int(size) / batch_size))


class PrivateTraining:
    """Per-sample gradients on `model` and a DP optimizer for one hospital's local training;
    `detach` leaves the model as it was (no hooks)."""

    def __init__(self, setting: DPSGD, model: nn.Module, optimizer: torch.optim.Optimizer, count: int, batch_size: int, seed: int) -> None:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        self.module = GradSampleModule(model)
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=setting.noise_multiplier,
            max_grad_norm=setting.clip_norm,
            expected_batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed + 1),  # the noise: its own stream of the hospital's seed
        )
        self.sampler = UniformWithReplacementSampler(
            num_samples=count, sample_rate=1.0 / dp_sgd_batches(count, batch_size), generator=torch.Generator().manual_seed(seed)
        )

    def batches(self) -> Iterator[torch.Tensor]:
        """One epoch of Poisson batches (index tensors), empty ones left out."""
        for indices in self.sampler:
            if len(indices):
                yield torch.as_tensor(indices, dtype=torch.long)

    def detach(self) -> None:
        self.module.remove_hooks()
        for parameter in self.module._module.parameters():
            parameter.grad_sample = None


def refuse_unsupported_model(model: nn.Module, name: str) -> None:
    """Opacus computes per-sample gradients only for some layers (no BatchNorm, which mixes samples)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(f"privacy.mechanism: dp_sgd cannot train model {name} ({errors[0]}); use model.name: small_cnn_gn")
