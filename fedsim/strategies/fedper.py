"""FedPer (Arivazhagan et al., 2019): a shared body, a local head at each hospital.

The model is split by parameter name: the head is every entry under `strategy.head` (a name
prefix; by default the module holding the model's last parameter, i.e. the final linear layer
of the built-in models: small_cnn's `head.3.`, resnet18's `fc.`, the DQN's last `net.` layer).
A hospital trains from the global body plus its own head (kept by the engine between its
rounds; the broadcast's initial head on its first round) and sends only the body, averaged as
in FedAvg:

    body_{t+1} = sum_k (n_k / n) * body_k,      head_k stays at hospital k.

A hospital is scored with its own head (hospital_eval.parquet). The broadcast's head never
trains, so the global_* columns score the shared body under the initial head: compare FedPer
runs on hospital-level metrics, as local-only ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fedsim.errors import ConfigError
from fedsim.params import Params
from fedsim.protocol import Instruction, LocalResult
from fedsim.strategies.base import StrategyConfig
from fedsim.strategies.fedavg import FedAvg

if TYPE_CHECKING:  # strategies stay torch-free on the server
    from torch import nn


class FedPerConfig(StrategyConfig):
    """FedPer: the body is averaged, each hospital keeps its own head."""

    name: Literal["fedper"] = "fedper"
    head: str | None = None  # parameter-name prefix of the local head; None: the model's last layer

    def build(self, config, task) -> "FedPer":
        return FedPer(head_keys(task.new_module(), self.head))


def head_keys(module: "nn.Module", prefix: str | None) -> frozenset[str]:
    """The model's entries (parameters and buffers) under `prefix`, by default under the module
    that holds its last parameter."""
    if prefix is None:
        last = list(dict(module.named_parameters()))[-1]
        prefix = last.rsplit(".", 1)[0] + "."
    names = list(module.state_dict())
    keys = frozenset(name for name in names if name.startswith(prefix))
    trained = {name for name, _ in module.named_parameters()}
    if not keys & trained:
        raise ConfigError(f"strategy.head: no parameter of the model starts with {prefix!r} (e.g. {names[-1]!r})")
    if trained <= keys:
        raise ConfigError(f"strategy.head: {prefix!r} covers the whole model; nothing would be shared")
    return keys


class FedPer(FedAvg):
    name = "fedper"
    keeps_hospital_state = True

    def __init__(self, head: frozenset[str]) -> None:
        self.local_keys = head

    def model_params(self, broadcast: Params, state: Any = None) -> Params:
        return broadcast if state is None else {**broadcast, **state}

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: Any) -> tuple[Params, dict[str, float]]:
        return {name: result.params[name] for name in self.local_keys}, {}
