"""LocalSGD is torch.optim.SGD without the Optimizer class (whose first use imports torch._dynamo)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fedsim.config import TrainConfig
from fedsim.tasks.local_sgd import LocalSGD


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-3)])
def test_local_sgd_steps_are_torch_sgd_steps_bit_for_bit(momentum: float, weight_decay: float) -> None:
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3), nn.Linear(3, 2))
    theirs, start = copy.deepcopy(ours), copy.deepcopy(ours)
    config = TrainConfig(lr=0.1, momentum=momentum, weight_decay=weight_decay)
    # the last layer gets no gradient in odd steps: both must skip it and keep its momentum
    local = LocalSGD(ours.parameters(), config)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
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


def test_zero_grad_can_keep_zeroed_gradients() -> None:
    layer = nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    LocalSGD(layer.parameters(), TrainConfig()).zero_grad(set_to_none=False)
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
