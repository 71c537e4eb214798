"""Model parameters as plain numpy: the currency between server, workers and strategies.

A `Params` is an ordered name -> array mapping (a torch state_dict without torch), so strategies
and the engine stay framework-free and everything pickles cheaply through Ray's object store.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

Params = dict[str, np.ndarray]


def is_trainable_float(array: np.ndarray) -> bool:
    """Float arrays are averaged; integer buffers (BatchNorm's num_batches_tracked) are not."""
    return np.issubdtype(array.dtype, np.floating)


def params_of(module: torch.nn.Module) -> Params:
    """Copy a module's parameters and buffers out as numpy arrays."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in module.state_dict().items()}


def load_params(module: torch.nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Load numpy params into a module (copies: arrays from Ray's object store are read-only)."""
    device = next(module.parameters()).device
    state = {name: torch.tensor(np.asarray(array), device=device) for name, array in params.items()}
    module.load_state_dict(state)


def params_nbytes(params: Mapping[str, np.ndarray]) -> int:
    return int(sum(array.nbytes for array in params.values()))
