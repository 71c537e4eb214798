"""Models for small medical images, by name: the built-in ones and any a user registers.

A model factory takes (input channels, number of classes) and returns a fresh `torch.nn.Module`.
The task resolves the name on the driver and carries the factory itself to the workers (Ray
pickles a factory defined in a script or notebook by value), so workers need no registration.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet18

from fedsim.errors import ConfigError
from fedsim.registry import Registry

ModelFactory = Callable[[int, int], nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


class SmallCNN(nn.Module):
    """Two conv blocks with BatchNorm and a small head (~120k parameters for 1x28x28, 2 classes).

    Adaptive pooling to 7x7 keeps the parameter count independent of the input size. BatchNorm is
    there on purpose: FedBN's local statistics need BN layers to keep. `norm` swaps it (GroupNorm
    for differential privacy: no running statistics to leak, and per-sample gradients exist).
    """

    def __init__(self, in_channels: int, num_classes: int, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            norm(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            norm(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def small_input_resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision ResNet-18 for 28-64 px inputs: a 3x3 stride-1 stem and no max-pool, so the
    feature map is not reduced to 1x1 before the last stage (as in CIFAR-style ResNets)."""
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def small_cnn_group_norm(in_channels: int, num_classes: int) -> nn.Module:
    """The small CNN with GroupNorm (8 groups) instead of BatchNorm: what DP runs need."""
    return SmallCNN(in_channels, num_classes, norm=lambda channels: nn.GroupNorm(8, channels))


def register_model(name: str, factory: ModelFactory) -> ModelFactory:
    """Make `factory(in_channels, num_classes) -> nn.Module` available as `model.name: <name>`."""
    MODELS.register(name, factory)
    return factory


def model_factory(name: str) -> ModelFactory:
    factory = MODELS.get(name)
    if factory is None:
        raise ConfigError(f"model.name: unknown model {name!r}; expected one of {', '.join(MODELS.names())} "
                          "(or register yours with fedsim.register_model)")
    return factory


register_model("small_cnn", SmallCNN)
register_model("small_cnn_gn", small_cnn_group_norm)
register_model("resnet18", small_input_resnet18)
