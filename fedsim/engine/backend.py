"""Where a round's work runs: the interface the round protocol (fedsim.engine.rounds) drives.

Two implementations: `InProcessBackend` (fedsim.engine.in_process: WorkerCore and ServerCore
called directly, no Ray; tests, debugging, the FedMRL MultiAgentEnv) and `RayBackend`
(fedsim.engine.ray_backend: the worker pool and the server actor). The values passed between
calls (`Partials`, `Weights`) are whatever the backend needs: objects in-process, object refs on
Ray; the protocol only hands them back. Every call waits for its work to finish (or fail), so an
error anywhere fails the round with its own message. A backend recovers from dead workers itself;
a dead server raises `ServerLost`, and the driver restores the last checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from fedsim.checkpoint import Checkpoint
from fedsim.params import Params
from fedsim.protocol import ClientReport, Cohort, Instruction

Partials = Any
Weights = Any


class ServerLost(RuntimeError):
    """The server died mid-round: its state since the last checkpoint is gone."""


class Backend(ABC):
    #: The strategy decides weights after training (summaries -> weigh -> weighted sums).
    weighs_after_training: bool
    #: The run's update pipeline (the driver's copy: what it says of bytes is a pure function of the config).
    pipeline: Any
    #: Under `train(hold=True)` the workers keep the (weighted) contributions instead of summing
    #: them, and `weighted_sums({kept: 1.0})` sums the kept ones: the strategy neither weighs
    #: after training nor sends individual updates (those paths leave out unkept hospitals anyway).
    holds_contributions: bool
    #: The strategy has a global model to evaluate (see Strategy.has_global_model).
    has_global_model: bool

    @abstractmethod
    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]: ...

    @abstractmethod
    def train(self, round_index: int, instructions: list[Instruction], costs: np.ndarray,
              hold: bool = False) -> tuple[Partials, list[ClientReport]]:
        """Local work of every instructed hospital (spread over workers by `costs`); the
        reports are sorted by hospital. `hold`: keep the contributions on the workers until
        `weighted_sums` says which to sum (the simulated clock decides who arrived)."""

    @abstractmethod
    def withdraw(self, hospitals: list[int]) -> None:
        """The last train's work of `hospitals` does not count: they keep their state from before it."""

    @abstractmethod
    def weigh(self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], summaries: Partials) -> Weights: ...

    @abstractmethod
    def weighted_sums(self, weights: Weights | dict[int, float]) -> Partials:
        """The held contributions summed with `weights` (hospitals without one are left out)."""

    @abstractmethod
    def aggregate(
        self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], partials: Partials
    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Fold the partial sums into the next broadcast; returns the round's metrics and the
        strategy's per-hospital quantities."""

    @abstractmethod
    def receive(self, dispatch: int, hospitals: list[int], partials: Partials) -> None:
        """Asynchronous strategies: hand the server the updates of `hospitals` from the train of
        dispatch `dispatch` (the others dropped out), to keep until they arrive."""

    @abstractmethod
    def step(self, arrivals: list[tuple[int, int, int]]) -> dict[str, float]:
        """Asynchronous strategies: one server step with the arrived (dispatch, hospital,
        staleness) updates (ServerCore.step); returns the step's metrics."""

    @abstractmethod
    def evaluate(self, hospitals: list[int], num_units: int, round_index: int = 0) -> tuple[dict[int, dict[str, float]], list[Any]]:
        """The current broadcast scored on each hospital's own test split, and every global
        unit's outputs; `round_index` keys the seeds of evaluation's fine-tuning."""

    @abstractmethod
    def observe(self, round_index: int, validation: dict[str, float]) -> None:
        """Give the strategy the round's validation metrics (`validation_metrics`; never test scores)."""

    @abstractmethod
    def broadcast_bytes(self) -> int:
        """Size of the current broadcast, as sent to each hospital."""

    def bytes_sent(self, round_index: int, instructions: list[Instruction]) -> int:
        """What the server sends the instructed hospitals this round: the broadcast, or as much of
        it as an update stage says each hospital receives (federated dropout's sub-network)."""
        full = self.broadcast_bytes()
        return sum(self.pipeline.download_bytes(full, round_index, instruction.hospital) for instruction in instructions)

    @abstractmethod
    def global_params(self) -> Params:
        """The current global model."""

    @abstractmethod
    def snapshot(self, round_index: int) -> Checkpoint:
        """Everything that determines the future after `round_index` (see fedsim.checkpoint)."""

    @abstractmethod
    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from `checkpoint` (a fresh server where the old one died)."""

    def drain_events(self) -> list[dict[str, Any]]:
        """Recoveries since the last call (worker replacements), for events.parquet."""
        return []

    def memory(self) -> dict[str, int]:
        """What the workers cost the machine so far: `workers_peak_rss` (summed peak resident
        memory) and `object_store_bytes` (cluster-wide, now); zeros where the workers are this
        process."""
        return {"workers_peak_rss": 0, "object_store_bytes": 0}

    def close(self) -> None:
        """Release workers and server."""


@contextmanager
def open_backend(config: Any, task: Any, strategy: Any, pipeline: Any) -> Iterator[Backend]:
    """The backend `config.engine.backend` names, with the round-0 model on its server."""
    from fedsim.seeding import Stream, seed_for

    initial = task.initial_params(seed_for(config.seed, Stream.MODEL_INIT))
    if config.engine.backend == "in_process":
        from fedsim.engine.in_process import InProcessBackend

        backend: Backend = InProcessBackend(
            task, strategy, pipeline, initial, config.seed, config.num_workers(), config.eval.personalise_steps
        )
        try:
            yield backend
        finally:
            backend.close()
        return
    from fedsim.engine.ray_backend import ray_backend

    with ray_backend(config, task, strategy, pipeline, initial) as backend:
        yield backend
