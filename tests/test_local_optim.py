"""LocalSGD and LocalAdam are torch.optim.SGD and torch.optim.Adam without the Optimizer class
(whose first use imports torch._dynamo): their steps must be torch.optim's bit for bit."""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from torch import nn

from fedsim.config import TrainConfig
from fedsim.tasks.local_optim import LocalAdam, LocalSGD


def _assert_same_steps(ours_of: Callable, theirs_of: Callable) -> None:
    """Six steps of a small CNN under both optimisers; the last layer gets no gradient in odd
    steps, so both must skip it and keep its state (momentum, Adam's moments and step count)."""
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3), nn.Linear(3, 2))
    theirs, start = copy.deepcopy(ours), copy.deepcopy(ours)
    local, reference = ours_of(ours.parameters()), theirs_of(theirs.parameters())
    for step in range(6):
        images = torch.randn(5, 1, 8, 8)
        for model, optimizer in ((ours, local), (theirs, reference)):
            optimizer.zero_grad(set_to_none=True)
            features = model[:4](images)
            output = model[4](features) if step % 2 == 0 else features[:, :2]
            output.square().mean().backward()
            optimizer.step()
    for (name, mine), theirs_value in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(mine, theirs_value), name
    assert all(not torch.equal(a, b) for a, b in zip(ours.parameters(), start.parameters()))  # every layer moved


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-3)])
def test_local_sgd_steps_are_torch_sgd_steps_bit_for_bit(momentum: float, weight_decay: float) -> None:
    config = TrainConfig(lr=0.1, momentum=momentum, weight_decay=weight_decay)
    _assert_same_steps(
        lambda parameters: LocalSGD(parameters, config),
        lambda parameters: torch.optim.SGD(parameters, lr=0.1, momentum=momentum, weight_decay=weight_decay),
    )


@pytest.mark.parametrize("lr", [5e-4, 0.05])
def test_local_adam_steps_are_torch_adam_steps_bit_for_bit(lr: float) -> None:
    _assert_same_steps(lambda parameters: LocalAdam(parameters, lr), lambda parameters: torch.optim.Adam(parameters, lr=lr))


def test_local_adam_keeps_a_skipped_parameters_step_count() -> None:
    """Adam's bias correction uses each parameter's own step count: a layer skipped once has
    taken one step fewer than the rest."""
    layers = nn.Linear(2, 2), nn.Linear(2, 1)
    optimiser = LocalAdam([p for layer in layers for p in layer.parameters()], 0.01)
    for step in range(3):
        optimiser.zero_grad()
        hidden = layers[0](torch.ones(1, 2))
        (layers[1](hidden) if step != 1 else hidden).sum().backward()
        optimiser.step()
    counts = [float(count) for _, _, count in optimiser.moments]
    assert counts == [3.0, 3.0, 2.0, 2.0]


def test_zero_grad_can_keep_zeroed_gradients() -> None:
    layer = nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    LocalSGD(layer.parameters(), TrainConfig()).zero_grad(set_to_none=False)
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
