"""Models for small medical images."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


class SmallCNN(nn.Module):
    """Two conv blocks with BatchNorm and a small head (~120k parameters for 1x28x28, 2 classes).

    Adaptive pooling to 7x7 keeps the parameter count independent of the input size. BatchNorm is
    there on purpose: FedBN's local statistics need BN layers to keep.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
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


def build_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    if name == "small_cnn":
        return SmallCNN(in_channels, num_classes)
    if name == "resnet18":
        return small_input_resnet18(in_channels, num_classes)
    raise ValueError(f"model.name: expected small_cnn or resnet18, got {name!r}")
