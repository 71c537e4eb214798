"""Checkpoints: everything that determines a run's future, written after every k-th round.

A checkpoint holds the last complete round, the server's state (broadcast, strategy state such as
FedAdam's moments or FedMRL's QMIX learner, replay and schedule, the update stages' server state)
and every hospital's engine-held state (FedBN's BN, SCAFFOLD's c_i, a DQN's replay buffer and
target network, error-feedback residuals), the simulated clock (who is online next depends on
it) and, for an asynchronous strategy, its event loop (fedsim.engine.asynchronous.AsyncState:
version, hospitals in flight, the buffer; their updates wait in the server's state). Everything
else a run needs is a pure function of the config and the seed, so resuming from a checkpoint produces the same bits as never stopping.
It is one pickle, written to a temporary file and renamed into place: a crash while writing
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.protocol import HospitalState

CHECKPOINT = "checkpoint.pkl"


@dataclass
class Checkpoint:
    round_index: int  # the last complete round
    server: dict[str, Any]  # ServerCore.get_state()
    hospitals: dict[int, HospitalState]
    round_starts: tuple[float, ...] = ()  # simulated clock when each round 1..round_index started, then now (systems)
    asynchronous: Any = None  # AsyncState of an asynchronous strategy's run


def save_checkpoint(run_dir: Any, checkpoint: Checkpoint) -> int:
    """Write atomically into `run_dir` (a RunDirectory); returns the checkpoint's size in bytes."""
    payload = pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)
    run_dir.write_atomically(CHECKPOINT, lambda path: path.write_bytes(payload))
    return len(payload)


def load_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint in run directory `path`, or None if it has none."""
    file = Path(path) / CHECKPOINT
    if not file.is_file():
        return None
    return pickle.loads(file.read_bytes())
