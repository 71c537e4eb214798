"""QMIX's two networks as RLlib (new API stack) RLModules.

The per-agent Q-network is shared by every hospital; the mixer turns the chosen agents' Q-values
into Q_tot with weights produced by hypernetworks from the global state. Mixing weights pass
through abs(), so Q_tot is monotonic in every agent's Q (QMIX's condition for decentralised
argmax = joint argmax). Unlike the original fixed-size mixer, ours takes a *set* of agents of any
size (a round samples any subset of hospitals): each agent's first-layer weight comes from a
hypernetwork on (global state, its own observation), and the mixed embedding is the mean over
the present agents, so Q_tot is permutation-invariant and defined for any cohort size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ray.rllib.core.rl_module.apis.target_network_api import TargetNetworkAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.core.learner.utils import make_target_network


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class AgentQModule(TorchRLModule, TargetNetworkAPI):
    """Q(o_i, .) over the mu grid; parameters shared across hospitals."""

    def setup(self) -> None:
        hidden = self.model_config.get("hidden", 64)
        self.q_net = _mlp(self.observation_space.shape[0], hidden, self.action_space.n)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"q_values": self.q_net(batch["obs"])}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Online Q of this step's and the next step's agents, and target Q of the next ones."""
        return {
            "q_values": self.q_net(batch["obs"]),
            "next_q_values": self.q_net(batch["next_obs"]),
            "next_q_target": self._target_q_net(batch["next_obs"]),
        }

    def make_target_networks(self) -> None:
        self._target_q_net = make_target_network(self.q_net)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.q_net, self._target_q_net)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"q_values": self._target_q_net(batch["obs"])}


class MonotonicMixer(nn.Module):
    """Q_tot(s, {(o_i, Q_i)}) = w2(s) . elu(mean_i |W1(s, o_i)| Q_i + b1(s)) + V(s), w2 >= 0."""

    def __init__(self, state_dim: int, obs_dim: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.hyper_w1 = _mlp(state_dim + obs_dim, hidden, embed)
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.hyper_w2 = _mlp(state_dim, hidden, embed)
        self.value = _mlp(state_dim, hidden, 1)

    def forward(self, agent_q: torch.Tensor, state: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """agent_q, mask: (B, A); state: (B, S); obs: (B, A, O) -> Q_tot: (B,)."""
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        per_agent_state = state.unsqueeze(1).expand(-1, obs.shape[1], -1)
        w1 = torch.abs(self.hyper_w1(torch.cat([per_agent_state, obs], dim=-1)))  # (B, A, E)
        mixed = (w1 * (agent_q * mask).unsqueeze(-1)).sum(dim=1) / count  # (B, E)
        hidden = F.elu(mixed + self.hyper_b1(state))
        w2 = torch.abs(self.hyper_w2(state))
        return (hidden * w2).sum(dim=-1) + self.value(state).squeeze(-1)


class MixerModule(TorchRLModule, TargetNetworkAPI):
    """The mixing network as an RLModule (observation space = the global state)."""

    def setup(self) -> None:
        config = self.model_config
        self.mixer = MonotonicMixer(
            self.observation_space.shape[0], config["agent_obs_dim"], config.get("embed", 32), config.get("hidden", 64)
        )

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"q_tot": self.mixer(batch["agent_q"], batch["state"], batch["obs"], batch["mask"])}

    def make_target_networks(self) -> None:
        self._target_mixer = make_target_network(self.mixer)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.mixer, self._target_mixer)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"q_tot": self._target_mixer(batch["agent_q"], batch["state"], batch["obs"], batch["mask"])}
