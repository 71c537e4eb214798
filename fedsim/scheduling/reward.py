"""The per-step reward of a hospital, as one documented formula.

With dt the step length in hours, the state measured at the end of the step and the events of
the step, the weights of RewardConfig (defaults in brackets) give

    r = - wait              * dt * sum_{waiting i} w(a_i)                 [1.0, w = 5,4,3,2,1 for acuity 1..5]
        - imbalance         * dt * (max_q L_q - min_q L_q)                 [0.1]
        + high_acuity_bonus * (completed acuity 1-2 cases)                 [1.0]
        - over_utilisation  * dt * sum_r max(0, used_r - nominal_r)        [2.0; r = beds, staff, equipment]
        - allocation_cost   * (surge units opened)                         [2.0]
        - sum_{transferred i} (wait * w(a_i) * transfer_hours + transfer_cost)   [3.0, 1 h]

L_q is the length of queue q. Because each waiting patient is charged once per step spent in a
queue, the first term summed over an episode is exactly -wait * sum_i w(a_i) * wait_i (censored at
the episode's end); the last term charges the sender for the patient's time in transit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from fedsim.scheduling.config import RewardConfig


@dataclass(frozen=True)
class StepFacts:
    """What the reward depends on: end-of-step state and the step's events."""

    waiting_by_acuity: Sequence[int]  # number of waiting patients of acuity 1..5
    queue_lengths: Sequence[int]
    high_acuity_completed: int
    over_capacity: int  # sum over resources of units in use above nominal capacity
    surge_opened: int
    transferred_acuities: Sequence[int]


def step_reward(weights: RewardConfig, dt: float, transfer_hours: float, facts: StepFacts) -> float:
    w = weights.acuity_weights
    waiting = sum(weight * count for weight, count in zip(w, facts.waiting_by_acuity))
    imbalance = max(facts.queue_lengths) - min(facts.queue_lengths)
    transfers = sum(weights.wait * w[a - 1] * transfer_hours + weights.transfer_cost for a in facts.transferred_acuities)
    return (
        -weights.wait * dt * waiting
        - weights.imbalance * dt * imbalance
        + weights.high_acuity_bonus * facts.high_acuity_completed
        - weights.over_utilisation * dt * facts.over_capacity
        - weights.allocation_cost * facts.surge_opened
        - transfers
    )
