"""Models for small medical images, by name: the built-in ones and any a user registers.

A model factory takes (input channels, number of classes) and returns a fresh `torch.nn.Module`.
The task resolves the name on the driver and carries the factory itself to the workers (Ray
pickles a factory defined in a script or notebook by value), so workers need no registration.

torchvision is imported inside the factories that use it: importing it pulls in torch._dynamo,
about 2 s of every Ray worker's start on a small CPU, which runs of the small CNN need not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

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
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def small_cnn_group_norm(in_channels: int, num_classes: int) -> nn.Module:
    """The small CNN with GroupNorm (8 groups) instead of BatchNorm: what DP runs need."""
    return SmallCNN(in_channels, num_classes, norm=lambda channels: nn.GroupNorm(8, channels))


def imagenet_densenet121(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's DenseNet-121 (the FedMRL authors' backbone, for 224 px inputs); grey images
    get a one-channel stem (a pretrained stem's RGB filters are summed when loaded)."""
    from torchvision.models import densenet121

    model = densenet121(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.features.conv0 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def imagenet_resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with its ImageNet stem (7x7 stride 2 and max-pool), the shape
    ImageNet weights fit; `resnet18` is the small-input variant."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def _head(model: nn.Module) -> str:
    """The classifier head: the last Linear layer's name."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError("model.weights: the model has no Linear classifier head to keep trainable")
    return linears[-1]


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A saved state dict (`torch.save(model.state_dict(), path)`), read without running code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is no state dict
        raise ConfigError(f"model.weights: {path} could not be read as a state dict ({type(error).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.weights: {path} holds no state dict (expected a mapping of names to tensors)")
    return state


class _FrozenBackbone(nn.Module):
    """A model whose backbone is fixed: no gradient, and its BatchNorm statistics stay those of
    the weights file (the backbone runs in eval mode even while the head trains)."""

    def __init__(self, model: nn.Module, head: str) -> None:
        super().__init__()
        self.model, self.head = model, head
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(head + "."))

    def train(self, mode: bool = True) -> "_FrozenBackbone":
        super().train(mode)
        for name, module in self.model.named_modules():
            if not name.startswith(self.head) and isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


@dataclass(frozen=True)
class Pretrained:
    """`factory`'s model with its weights from a local file (no downloads at run time): every
    tensor is loaded except the classifier head when its class count differs (it starts fresh);
    a 3-channel stem loaded into a 1-channel model gets its RGB filters summed. Any other
    missing, unexpected or misshapen tensor is refused in one line naming the file."""

    factory: ModelFactory
    path: str
    freeze_backbone: bool

    def __post_init__(self) -> None:
        read_state_dict(self.path)  # fail on the driver, before any data loads

    def __call__(self, in_channels: int, num_classes: int) -> nn.Module:
        model = self.factory(in_channels, num_classes)
        head, own = _head(model), model.state_dict()
        state = read_state_dict(self.path)
        unexpected = sorted(set(state) - set(own))
        missing = sorted(k for k in set(own) - set(state) if not k.startswith(head + "."))
        if unexpected or missing:
            which = f"unexpected {unexpected[:3]}" if unexpected else f"missing {missing[:3]}"
            raise ConfigError(f"model.weights: {self.path} does not fit this model ({which}); save one with torch.save(model.state_dict())")
        loaded = {}
        for name, tensor in state.items():
            if tensor.shape != own[name].shape and tensor.ndim == 4 and tensor.shape[1] == 3 and own[name].shape[1] == 1:
                tensor = tensor.sum(dim=1, keepdim=True)
            if tensor.shape != own[name].shape:
                if name.startswith(head + "."):
                    continue  # another class count: the head starts fresh
                raise ConfigError(f"model.weights: {self.path}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(own[name].shape)}")
            loaded[name] = tensor
        model.load_state_dict(loaded, strict=False)
        return _FrozenBackbone(model, head) if self.freeze_backbone else model


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
register_model("resnet18_imagenet", imagenet_resnet18)
register_model("densenet121", imagenet_densenet121)
