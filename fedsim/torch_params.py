"""Moving Params in and out of torch modules (used where models live: tasks and benchmarks)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from fedsim.params import Params


def params_of(module: torch.nn.Module) -> Params:
    """Copy a module's parameters and buffers out as numpy arrays."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in module.state_dict().items()}


def load_params(module: torch.nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Load numpy params into a module (copies: arrays from Ray's object store are read-only)."""
    device = next(module.parameters()).device
    state = {name: torch.tensor(np.asarray(array), device=device) for name, array in params.items()}
    module.load_state_dict(state)
