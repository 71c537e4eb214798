"""The droppable units of the models federated dropout knows (fedsim.privacy.federated_dropout),
read off the torch modules on the driver (the stage itself stays torch-free for the server)."""

from __future__ import annotations

from torch import nn

from fedsim.errors import ConfigError
from fedsim.models import SmallCNN
from fedsim.privacy.federated_dropout import UnitLayer


def small_cnn_layers(model: SmallCNN) -> tuple[UnitLayer, ...]:
    """Conv channels of both blocks (whole groups under GroupNorm) and the head's hidden neurons.
    The second block's channel c feeds head.1's columns c*P .. (c+1)*P - 1, P the pooled pixels."""
    features, head = model.features, model.head
    pooled = features[-1].output_size
    pixels = pooled * pooled if isinstance(pooled, int) else int(pooled[0]) * int(pooled[1])
    layers = []
    for conv, norm, relu, following, spread in ((0, 1, 2, "features.4", 1), (4, 5, 6, "head.1", pixels)):
        channels = features[conv].out_channels
        width = channels // features[norm].num_groups if isinstance(features[norm], nn.GroupNorm) else 1
        own = [f"features.{conv}.weight", f"features.{conv}.bias"]
        own += [f"features.{norm}.{name}" for name in features[norm].state_dict() if name != "num_batches_tracked"]
        members = tuple((name, 0, width) for name in own) + ((f"{following}.weight", 1, width * spread),)
        layers.append(UnitLayer(f"features.{relu}", channels // width, width, members))
    layers.append(UnitLayer("head.2", head[1].out_features, 1, (("head.1.weight", 0, 1), ("head.1.bias", 0, 1), ("head.3.weight", 1, 1))))
    return tuple(layers)


def unit_layers(model: nn.Module, name: str) -> tuple[UnitLayer, ...]:
    """The droppable layers of a model whose structure is known; others are refused in one line."""
    if type(model) is SmallCNN and isinstance(model.features[1], (nn.GroupNorm, nn.BatchNorm2d)):
        return small_cnn_layers(model)
    raise ConfigError(f"compression.scheme: federated_dropout does not know the layers of model {name} "
                      "(it drops units of small_cnn and small_cnn_gn)")
