"""Asynchronous aggregation on the simulated clock (FedBuff, FedAsync; README, Systems).

There are no rounds: `sampling.clients_per_round` hospitals (the concurrency) train at once, each
from the server model current when it starts. Events happen in simulated time:

- A *dispatch* fills the free slots: it samples among the idle hospitals (not training now) as
  `sampling.scheme` says (fixed: uniformly, then an offline one does not take part; available:
  uniformly among those online; proportional: by training samples), sends them the current model
  and trains them on the backend at once. Everything a hospital's work draws (local training
  seed, local epochs, dropout, update stages) is keyed by the dispatch number in place of a round
  number, so a run is a pure function of seed and config.
- A hospital *arrives* after download + compute + upload (fedsim.systems.clock); one that drops
  out (its tier's probability) frees its slot when it would have arrived, and its work does not
  count. Simultaneous arrivals are taken in dispatch order, then by hospital id.
- Each arrival's update joins the server's buffer with staleness (version now) - (version it
  started from); when the buffer holds the strategy's `buffer_size` updates, the server steps
  (a new version) and is evaluated when due. Free slots are refilled once no other arrival
  happens at the same instant, from the newest model.

`AsynchronousRun.step` advances to the next server step and returns it as a `RoundOutcome`: the
driver writes one rounds.parquet row per server step (`round` is the step, i.e. the model
version) and one clients.parquet row per arrival since the previous step. Everything that
determines the future besides the backend's state (clock, version, hospitals in flight, the
buffer) is `AsyncState`, which goes into the checkpoint; the updates themselves wait on the
server (ServerCore.pending).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedsim.engine.backend import Backend
from fedsim.engine.rounds import RoundOutcome, RoundSchedule, evaluate_and_observe, local_epochs, sample_passes
from fedsim.engine.sampling import available_hospitals, proportional_hospitals
from fedsim.protocol import ClientReport, Cohort, Instruction
from fedsim.quarantine import OK
from fedsim.systems.clock import DROPPED_OUT
from fedsim.systems.profiles import HOUR, hour_of_day
from fedsim.tasks.base import Task

NAN = float("nan")


@dataclass(frozen=True)
class Work:
    """One hospital's dispatched work, from its start to its arrival."""

    dispatch: int
    version: int  # the server version it started from
    start: float  # simulated clock when it started
    seconds: float  # download + compute + upload: it arrives (or, dropped out, frees its slot) at start + seconds
    instruction: Instruction
    report: ClientReport  # status DROPPED_OUT when it never arrives

    @property
    def order(self) -> tuple[float, int, int]:
        """Arrival order: time, then dispatch, then hospital id."""
        return (self.start + self.seconds, self.dispatch, self.instruction.hospital)


@dataclass
class AsyncState:
    """The asynchronous run between two server steps."""

    clock: float = 0.0
    version: int = 0  # server steps so far
    dispatches: int = 0
    in_flight: list[Work] = field(default_factory=list)  # in arrival order
    arrived: list[tuple[Work, int | None]] = field(default_factory=list)  # since the last step, with staleness (None: not buffered)
    bytes_sent: int = 0  # broadcast bytes sent since the last step
    step_clock: float = 0.0  # the clock at the last step
    next_evaluation: float = 0.0  # eval.every_seconds: the clock from which the next step is evaluated


@dataclass(frozen=True)
class StepTimeline:
    """A server step on the simulated clock: its length, and the columns of the arrivals it logs."""

    seconds: float
    columns: list[dict[str, Any]]

    def client_columns(self, reports: list[ClientReport]) -> list[dict[str, Any]]:
        return self.columns


class AsynchronousRun:
    """The event loop of an asynchronous strategy (see the module docstring)."""

    def __init__(self, config: Any, task: Task, schedule: RoundSchedule, buffer_size: int) -> None:
        assert schedule.systems is not None and schedule.profiles is not None  # guaranteed by config validation
        self.config, self.task, self.schedule = config, task, schedule
        self.systems, self.profiles = schedule.systems, schedule.profiles
        self.concurrency = config.clients_per_round()
        self.buffer_size = buffer_size
        self.state = AsyncState(next_evaluation=config.eval.every_seconds or 0.0)

    def step(self, backend: Backend, step_index: int) -> RoundOutcome:
        """Run the clock to server step `step_index` (the next one), evaluate if due."""
        state = self.state
        while True:
            if not state.in_flight or state.in_flight[0].order[0] > state.clock:  # nothing else arrives now
                self._dispatch(backend)
            if not state.in_flight:  # nobody could start: wait until a hospital comes online
                state.clock = self._next_opening()
                continue
            work = state.in_flight.pop(0)
            state.clock = work.start + work.seconds
            staleness = state.version - work.version if work.report.status == OK else None
            state.arrived.append((work, staleness))
            buffered = [(w.dispatch, w.instruction.hospital, tau) for w, tau in state.arrived if tau is not None]
            if len(buffered) == self.buffer_size:
                return self._server_step(backend, step_index, buffered)

    def _server_step(self, backend: Backend, step_index: int, buffered: list[tuple[int, int, int]]) -> RoundOutcome:
        state, config = self.state, self.config
        metrics = backend.step(buffered)
        state.version += 1
        applied = [w for w, tau in state.arrived if tau is not None]
        scored = None
        every_seconds = config.eval.every_seconds
        due = state.clock >= state.next_evaluation if every_seconds else step_index % config.eval.every == 0
        if due or step_index == config.rounds:
            scored = list(range(self.task.num_hospitals)) if config.eval.hospitals == "all" \
                else sorted({w.instruction.hospital for w in applied})
            if every_seconds:
                state.next_evaluation = (math.floor(state.clock / every_seconds) + 1) * every_seconds
        hospital_scores, global_metrics, global_tables = evaluate_and_observe(backend, self.task, step_index, scored)
        columns = [{"sim_start": w.start, "sim_finish": w.seconds if w.report.status != DROPPED_OUT else NAN,
                    "kept": tau is not None, "version": w.version, "staleness": NAN if tau is None else float(tau)}
                   for w, tau in state.arrived]
        timeline = StepTimeline(state.clock - state.step_clock, columns)
        outcome = RoundOutcome(step_index, [w.instruction for w in applied], [w.report for w, _ in state.arrived], metrics,
                               hospital_scores, global_metrics, state.bytes_sent, timeline, global_tables)
        state.arrived, state.bytes_sent, state.step_clock = [], 0, state.clock
        return outcome

    def _dispatch(self, backend: Backend) -> None:
        """Fill the free slots with sampled idle hospitals, trained from the current model."""
        state, config, sizes = self.state, self.config, self.schedule.sizes
        free = self.concurrency - len(state.in_flight)
        idle = np.ones(self.task.num_hospitals, dtype=bool)
        idle[[w.instruction.hospital for w in state.in_flight]] = False
        if free <= 0 or not idle.any():
            return
        state.dispatches += 1
        dispatch = state.dispatches
        online = self.profiles.online(hour_of_day(config.systems.start_hour, state.clock))
        scheme = config.sampling.scheme
        if scheme == "proportional":
            hospitals = proportional_hospitals(config.seed, dispatch, sizes * idle, free)
        else:
            hospitals = available_hospitals(config.seed, dispatch, idle & online if scheme == "available" else idle, free)
        hospitals = hospitals[online[hospitals]]
        if not len(hospitals):
            return
        cohort = Cohort(hospitals, sizes[hospitals], local_epochs(config.train, sizes, hospitals, config.seed, dispatch))
        instructions = backend.configure(dispatch, cohort)
        broadcast_bytes = backend.broadcast_bytes()
        state.bytes_sent += backend.bytes_sent(dispatch, instructions)
        partials, reports = backend.train(dispatch, instructions, sample_passes(cohort, instructions))
        dropped = [i.hospital for i in instructions if self.systems.drops_out(dispatch, i.hospital)]
        backend.withdraw(dropped)
        by_hospital = {report.hospital: report for report in reports}
        arriving = [h for h in by_hospital if h not in dropped and by_hospital[h].status == OK]
        backend.receive(dispatch, arriving, partials)
        for instruction in instructions:
            report = by_hospital[instruction.hospital]
            seconds = self.systems.seconds(instruction, report.upload_bytes, broadcast_bytes)
            if instruction.hospital in dropped:
                report = replace(report, status=DROPPED_OUT)
            state.in_flight.append(Work(dispatch, state.version, state.clock, seconds, instruction, report))
        state.in_flight.sort(key=lambda work: work.order)

    def _next_opening(self) -> float:
        """The first clock after now at which some hospital's online window opens."""
        hour = hour_of_day(self.config.systems.start_hour, self.state.clock)
        waits = (self.profiles.online_start - hour) % 24.0
        wait = float(np.min(np.where(waits > 0, waits, 24.0)))
        return self.state.clock + wait * HOUR
