"""QMIX's learner: a custom RLlib TorchLearner with the joint TD loss, double-Q targets and
Polyak-averaged target networks (RLlib ships no QMIX on its new API stack).

Batches hold joint transitions, agents kept together and padded to the largest cohort:
obs/next_obs (B, A, O), actions (B, A), mask/next_mask (B, A), state/next_state (B, S),
reward and done (B,). Double Q: the next joint action is the online agents' greedy choice,
valued by the target agents and the target mixer:

    y = r + gamma * (1 - done) * Qtot_target(s', {Q_target(o'_i, argmax_a Q(o'_i, a))})
    loss = (Qtot(s, {Q(o_i, a_i)}) - y)^2
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec

AGENT, MIXER = "agent", "mixer"


class QMIXLearner(TorchLearner):
    gamma: float = 0.9
    target_tau: float = 0.05  # Polyak step of the target networks after every update

    def build(self) -> None:
        super().build()
        for module_id in (AGENT, MIXER):  # after the optimisers, so targets are never trained
            self.module[module_id].unwrapped().make_target_networks()

    def compute_losses(self, *, fwd_out: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        data, out = batch[AGENT], fwd_out[AGENT]
        actions = data["actions"].long()
        chosen = out["q_values"].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        mixer = self.module[MIXER].unwrapped()
        q_tot = mixer.mixer(chosen, data["state"], data["obs"], data["mask"])
        with torch.no_grad():
            greedy = out["next_q_values"].argmax(dim=-1, keepdim=True)
            next_q = out["next_q_target"].gather(-1, greedy).squeeze(-1)
            next_tot = mixer.forward_target(
                {"agent_q": next_q, "state": data["next_state"], "obs": data["next_obs"], "mask": data["next_mask"]}
            )["q_tot"]
            target = data["reward"] + self.gamma * (1.0 - data["done"]) * next_tot
        loss = F.mse_loss(q_tot, target)
        self.metrics.log_value((AGENT, "td_loss"), loss.detach(), window=1)
        return {AGENT: loss}

    def compute_loss_for_module(self, **kwargs: Any) -> Any:
        raise NotImplementedError("QMIX has one joint loss: see compute_losses")

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        with torch.no_grad():
            for module_id in (AGENT, MIXER):
                for online, target in self.module[module_id].unwrapped().get_target_network_pairs():
                    for p, p_target in zip(online.parameters(), target.parameters()):
                        p_target.mul_(1.0 - self.target_tau).add_(self.target_tau * p)


def build_qmix_learner(module_spec: MultiRLModuleSpec, lr: float, gamma: float, target_tau: float, seed: int) -> QMIXLearner:
    """A built, standalone learner (no Algorithm, no LearnerGroup: the FedMRL server drives it)."""
    config = AlgorithmConfig().framework("torch").training(lr=lr, grad_clip=10.0).debugging(seed=seed % 2**32)
    learner = QMIXLearner(config=config, module_spec=module_spec)
    learner.gamma, learner.target_tau = gamma, target_tau
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        learner.build()
    return learner
