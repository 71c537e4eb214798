"""The Ray backend: the bounded worker pool (fedsim.engine.pool) and the server actor, inside a
Ray session (fedsim.engine.cluster). The only module of the round path that talks to Ray.

Dead workers are replaced by the pool. A dead server loses the strategy's state since the last
checkpoint: every server call turns an actor death into `ServerLost`, `restore` starts a new
server from a checkpoint, and the driver replays the rounds since.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import ray
from ray.exceptions import RayActorError

from fedsim.checkpoint import Checkpoint
from fedsim.engine.backend import Backend, ServerLost
from fedsim.engine.cluster import ray_session
from fedsim.engine.memory import object_store_bytes
from fedsim.engine.pool import WorkerPool
from fedsim.engine.server import ServerCore
from fedsim.engine.worker import keeps_hospital_state
from fedsim.params import Params
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import ClientReport, Cohort, Instruction
from fedsim.strategies.base import Strategy
from fedsim.tasks.base import Task

_ServerActor = ray.remote(ServerCore)
Result = TypeVar("Result")


class RayBackend(Backend):
    def __init__(self, config: Any, task: Task, strategy: Strategy, pipeline: Pipeline, initial: Params) -> None:
        self.run_seed = config.seed
        self.pipeline = pipeline
        self.weighs_after_training = strategy.weighs_after_training
        self.holds_contributions = strategy.sums_on_workers
        self.has_global_model = strategy.has_global_model
        self.pool = WorkerPool(
            ray.put(task),
            strategy,
            pipeline,
            size=config.num_workers(),
            num_cpus=config.engine.num_cpus,
            num_gpus=config.engine.num_gpus,
            keeps_hospital_state=keeps_hospital_state(task, strategy, pipeline),
            max_retries=config.engine.max_retries,
            personalise_steps=config.eval.personalise_steps,
        )
        self._new_server: Callable[[], Any] = lambda: _ServerActor.options(num_cpus=0).remote(strategy, pipeline, initial)
        self.server = self._new_server()
        self._fetch_broadcast()

    def _fetch_broadcast(self) -> None:
        self.broadcast_ref, size_ref = self.server.initial.options(num_returns=2).remote()
        self._broadcast_bytes = self._server_call(lambda: ray.get(size_ref))

    def _server_call(self, call: Callable[[], Result]) -> Result:
        try:
            return call()
        except RayActorError as error:
            raise ServerLost(f"the server actor died ({type(error).__name__})") from None

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return self._server_call(lambda: ray.get(self.server.configure.remote(round_index, cohort)))

    def train(self, round_index: int, instructions: list[Instruction], costs: np.ndarray,
              hold: bool = False) -> tuple[list[ray.ObjectRef], list[ClientReport]]:
        return self.pool.train(round_index, self.run_seed, self.broadcast_ref, instructions, costs, hold)

    def withdraw(self, hospitals: list[int]) -> None:
        self.pool.withdraw(hospitals)

    def weigh(self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], summaries: list[ray.ObjectRef]) -> ray.ObjectRef:
        return self.server.weigh.remote(round_index, instructions, reports, *summaries)

    def weighted_sums(self, weights: ray.ObjectRef | dict[int, float]) -> list[ray.ObjectRef]:
        if isinstance(weights, dict):  # the simulated clock's kept hospitals, decided here
            weights = ray.put(weights)
        else:
            self._server_call(lambda: ray.get(weights))  # a few numbers; a dead server shows here, not as a worker's death
        return self.pool.weighted_sums(weights)

    def aggregate(
        self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], partials: list[ray.ObjectRef]
    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        self.broadcast_ref, metrics_ref, size_ref, hospital_ref = self.server.aggregate.options(num_returns=4).remote(
            round_index, instructions, reports, *partials
        )
        metrics, self._broadcast_bytes, hospital_metrics = self._server_call(lambda: ray.get([metrics_ref, size_ref, hospital_ref]))
        return metrics, hospital_metrics

    def receive(self, dispatch: int, hospitals: list[int], partials: list[ray.ObjectRef]) -> None:
        self._server_call(lambda: ray.get(self.server.receive.remote(dispatch, hospitals, *partials)))

    def step(self, arrivals: list[tuple[int, int, int]]) -> dict[str, float]:
        self.broadcast_ref, metrics_ref, size_ref = self.server.step.options(num_returns=3).remote(arrivals)
        metrics, self._broadcast_bytes = self._server_call(lambda: ray.get([metrics_ref, size_ref]))
        return metrics

    def evaluate(self, hospitals: list[int], num_units: int, round_index: int = 0) -> tuple[dict[int, dict[str, float]], list[Any]]:
        return self.pool.evaluate(self.broadcast_ref, hospitals, num_units, round_index, self.run_seed)

    def observe(self, round_index: int, validation: dict[str, float]) -> None:
        self._server_call(lambda: ray.get(self.server.observe.remote(round_index, validation)))

    def snapshot(self, round_index: int) -> Checkpoint:
        server = self._server_call(lambda: ray.get(self.server.get_state.remote()))
        hospitals = dict(zip(self.pool.states, ray.get(list(self.pool.states.values()))))
        return Checkpoint(round_index, server, hospitals)

    def restore(self, checkpoint: Checkpoint) -> None:
        try:
            ray.get(self.server.set_state.remote(checkpoint.server))
        except RayActorError:
            self.server = self._new_server()
            ray.get(self.server.set_state.remote(checkpoint.server))
            self.pool.events.append({"round": checkpoint.round_index + 1, "event": "server_replaced", "worker": -1,
                                     "during": "round", "detail": "restored from the checkpoint", "time": time.time()})
        self.pool.states = {hospital: ray.put(state) for hospital, state in checkpoint.hospitals.items()}
        self._fetch_broadcast()

    def drain_events(self) -> list[dict[str, Any]]:
        events, self.pool.events = self.pool.events, []
        return events

    def broadcast_bytes(self) -> int:
        return self._broadcast_bytes

    def global_params(self) -> Params:
        return self._server_call(lambda: ray.get(self.server.global_params.remote()))

    def memory(self) -> dict[str, int]:
        return {"workers_peak_rss": self.pool.peak_rss(), "object_store_bytes": object_store_bytes()}

    def close(self) -> None:
        self.pool.shutdown()
        ray.kill(self.server)


@contextmanager
def ray_backend(config: Any, task: Task, strategy: Strategy, pipeline: Pipeline, initial: Params) -> Iterator[RayBackend]:
    with ray_session(config.engine, config.num_workers()):
        backend = RayBackend(config, task, strategy, pipeline, initial)
        try:
            yield backend
        finally:
            backend.close()
