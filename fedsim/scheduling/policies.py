"""Who is admitted next: heuristic schedulers and the greedy policy of a Q-network.

A policy maps a batch of observations, and the hospitals they describe, to one action each.
Heuristics read the hospital directly (hand-written schedulers with a full view of the queues);
the Q-network reads the observation and skips actions that would not take effect. With nothing
to do, a heuristic returns action 0, which the invalid-action rule turns into a no-op.

- fifo: serve the queue whose head arrived first (first come, first served, as far as serving
  queue heads allows).
- priority: always the highest non-empty queue (static priority; a head that does not fit blocks).
- mlfq: the MLFQ rule without learning: the highest queue whose head fits now (lower queues
  backfill while a higher head waits for equipment); if nothing fits and the top queue is not
  empty, open a surge unit while any are left, else transfer the top queue's head once it has
  waited longer than the transfer delay; otherwise wait.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedsim.scheduling.hospital import Hospital

Policy = Callable[[np.ndarray, Sequence[Hospital]], np.ndarray]


def _fifo(hospital: Hospital) -> int:
    heads = [(queue[0].arrival, q) for q, queue in enumerate(hospital.queues) if queue]
    return min(heads)[1] if heads else 0


def _priority(hospital: Hospital) -> int:
    top = hospital.highest_nonempty()
    return 0 if top is None else top


def _mlfq(hospital: Hospital) -> int:
    for q, queue in enumerate(hospital.queues):
        if queue and hospital.fits(queue[0]):
            return q
    top = hospital.queues[0]
    if not top:
        return 0
    if len(hospital.surge) < hospital.profile.surge_units:
        return hospital.allocate_action
    if hospital.now - top[0].arrival >= hospital.transfer_steps:
        return hospital.transfer_action
    return 0


HEURISTICS: dict[str, Callable[[Hospital], int]] = {"fifo": _fifo, "priority": _priority, "mlfq": _mlfq}


def heuristic(name: str) -> Policy:
    """The named heuristic as a batch policy."""
    rule = HEURISTICS[name]
    return lambda observations, hospitals: np.array([rule(h) for h in hospitals], dtype=np.int64)


def greedy(network: nn.Module) -> Policy:
    """argmax of Q(s, a) over the actions that would take effect (ties: the lowest action)."""
    device = next(network.parameters()).device

    @torch.no_grad()
    def act(observations: np.ndarray, hospitals: Sequence[Hospital]) -> np.ndarray:
        values = network(torch.from_numpy(observations).to(device)).cpu().numpy()
        masks = np.stack([hospital.valid_actions() for hospital in hospitals])
        return np.where(masks, values, -np.inf).argmax(axis=1)

    return act
