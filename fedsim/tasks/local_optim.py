"""A hospital's local optimiser steps, without torch.optim's Optimizer class.

The first torch.optim.Optimizer a process builds imports torch._dynamo (the class's methods are
wrapped by torch._disable_dynamo): 2.4 s of every worker's first round on a 2-core machine, for
a plain step. These classes call the functions torch.optim's `step` methods call
(torch.optim.sgd.sgd, torch.optim.adam.adam) with the same arguments and the same state, so
their updates are torch.optim's bit for bit:

- `LocalSGD` (classification): d = g + weight_decay * w;  b = momentum * b + d (b = d on the
  first step);  w = w - lr * b.
- `LocalAdam` (the scheduling DQN; Kingma & Ba, 2015, default betas and eps): t = t + 1;
  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  w = w - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

Like torch.optim, a step skips the parameters without a gradient and keeps their state.
DP-SGD keeps torch.optim.SGD, because Opacus wraps an Optimizer (fedsim.privacy.dp_sgd).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from fedsim.config import TrainConfig


class _LocalOptimiser:
    """The parameters and the `zero_grad` both optimisers share with torch.optim."""

    def __init__(self, parameters: Iterable[torch.Tensor]) -> None:
        self.parameters = list(parameters)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters:
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad.zero_()

    def _with_gradient(self) -> list[int]:
        return [i for i, parameter in enumerate(self.parameters) if parameter.grad is not None]


class LocalSGD(_LocalOptimiser):
    """torch.optim.SGD(parameters, lr, momentum, weight_decay) for the calls local training
    makes: `zero_grad()` and `step()`."""

    def __init__(self, parameters: Iterable[torch.Tensor], train: TrainConfig) -> None:
        super().__init__(parameters)
        self.train = train
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.parameters)

    @torch.no_grad()
    def step(self) -> None:
        stepped = self._with_gradient()
        buffers = [self.momentum_buffers[i] for i in stepped]
        config = self.train
        sgd(
            [self.parameters[i] for i in stepped],
            [self.parameters[i].grad for i in stepped],
            buffers,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            lr=config.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        for i, buffer in zip(stepped, buffers):  # sgd fills the list with the first step's buffers
            self.momentum_buffers[i] = buffer


class LocalAdam(_LocalOptimiser):
    """torch.optim.Adam(parameters, lr) with its defaults (betas 0.9 / 0.999, eps 1e-8, no weight
    decay, no AMSGrad) for `zero_grad()` and `step()`."""

    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, parameters: Iterable[torch.Tensor], lr: float) -> None:
        super().__init__(parameters)
        self.lr = lr
        # per parameter, made at its first gradient as torch.optim.Adam does: (m, v, step count),
        # the count a float CPU scalar tensor (torch's layout without capturable or fused)
        self.moments: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * len(self.parameters)

    @torch.no_grad()
    def step(self) -> None:
        stepped = self._with_gradient()
        for i in stepped:
            if self.moments[i] is None:
                parameter = self.parameters[i]
                self.moments[i] = (
                    torch.zeros_like(parameter, memory_format=torch.preserve_format),
                    torch.zeros_like(parameter, memory_format=torch.preserve_format),
                    torch.tensor(0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32),
                )
        moments = [self.moments[i] for i in stepped]
        adam(
            [self.parameters[i] for i in stepped],
            [self.parameters[i].grad for i in stepped],
            [m for m, _, _ in moments],
            [v for _, v, _ in moments],
            [],
            [count for _, _, count in moments],
            amsgrad=False,
            has_complex=any(torch.is_complex(self.parameters[i]) for i in stepped),
            beta1=self.BETAS[0],
            beta2=self.BETAS[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=self.EPS,
            maximize=False,
        )
