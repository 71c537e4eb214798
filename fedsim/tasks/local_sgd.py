"""A hospital's local SGD, without torch.optim's Optimizer class.

The first torch.optim.Optimizer a process builds imports torch._dynamo (the class's methods are
wrapped by torch._disable_dynamo): 2.4 s of every worker's first round on a 2-core machine, for
a plain SGD step. `LocalSGD` calls the function torch.optim.SGD.step calls, torch.optim.sgd.sgd,
with the same arguments, so its updates are torch.optim.SGD's bit for bit:

    d = g + weight_decay * w;   b = momentum * b + d (b = d on the first step);   w = w - lr * b

DP-SGD keeps torch.optim.SGD, because Opacus wraps an Optimizer (fedsim.privacy.dp_sgd).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.sgd import sgd

from fedsim.config import TrainConfig


class LocalSGD:
    """torch.optim.SGD(parameters, lr, momentum, weight_decay) for the calls local training
    makes: `zero_grad()` and `step()`."""

    def __init__(self, parameters: Iterable[torch.Tensor], train: TrainConfig) -> None:
        self.parameters = list(parameters)
        self.train = train
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.parameters)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters:
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One step on the parameters that have a gradient (as torch.optim.SGD skips the rest)."""
        stepped = [i for i, parameter in enumerate(self.parameters) if parameter.grad is not None]
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
