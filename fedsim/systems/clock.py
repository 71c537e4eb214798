"""The simulated clock of a synchronous round: when each hospital arrives and which are kept.

A hospital's round time is

    download + compute + upload = B / downlink + (n_k * E_k) / speed + U_k / uplink

with B the broadcast's size, n_k its training samples, E_k its local epochs (capped by a partial
work budget), and U_k the real size of what it uploaded (after compression or masking). A
hospital drops out mid-round with its tier's probability (stream SYSTEM_DROPOUT) and never
arrives. The server closes the round when it has what it waits for (every hospital that did not
drop out; with over-selection the first k to arrive), and at the deadline at the latest; those
that arrived by then are kept. Everything here is a pure function of the seed, the config and
the real update sizes, never of the host's clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fedsim.protocol import ClientReport, Instruction
from fedsim.quarantine import OK
from fedsim.seeding import Stream, rng_for
from fedsim.systems.config import SystemsConfig
from fedsim.systems.profiles import SystemProfiles

DROPPED_OUT, LATE, OVER_SELECTED = "dropped out", "late", "over-selected"
NAN = float("nan")


@dataclass(frozen=True)
class RoundTimeline:
    """A round on the simulated clock: per hospital its finish time (seconds after the round
    started; NaN: dropped out) and status, and the round's length."""

    finish: dict[int, float]
    status: dict[int, str]
    seconds: float

    @property
    def kept(self) -> list[int]:
        return sorted(h for h, status in self.status.items() if status == OK)

    def client_columns(self, reports: list[ClientReport]) -> list[dict[str, float | bool]]:
        """clients.parquet's systems columns, one dict per report."""
        return [{"sim_finish": self.finish[report.hospital], "kept": report.status == OK} for report in reports]

    def mark(self, reports: list[ClientReport]) -> list[ClientReport]:
        """The reports with each hospital's systems status (a quarantined one keeps its own)."""
        return [report if report.status != OK else replace(report, status=self.status[report.hospital]) for report in reports]


class SystemsRound:
    """What the systems section does to a synchronous round, from the profiles and the config."""

    def __init__(self, spec: SystemsConfig, profiles: SystemProfiles, sizes: np.ndarray, step_samples: np.ndarray | None,
                 per_round: int, run_seed: int) -> None:
        """`step_samples`: the task's samples per local step, per hospital (needed for partial work only)."""
        self.spec = spec
        self.profiles = profiles
        self.sizes = np.asarray(sizes, dtype=np.float64)
        self.step_samples = step_samples
        self.per_round = per_round
        self.run_seed = run_seed

    def download_seconds(self, hospital: int, broadcast_bytes: int) -> float:
        return broadcast_bytes / float(self.profiles.downlink[hospital])

    def compute_seconds(self, instruction: Instruction) -> float:
        """Samples processed (n_k * E_k, or the partial budget's steps) over the hospital's speed."""
        return self.work(instruction) / float(self.profiles.samples_per_second[instruction.hospital])

    def work(self, instruction: Instruction) -> float:
        full = self.sizes[instruction.hospital] * instruction.plan.epochs
        steps = instruction.plan.max_steps
        if steps is None:
            return float(full)
        assert self.step_samples is not None  # max_steps is only set under partial work
        return min(float(full), steps * float(self.step_samples[instruction.hospital]))

    def plan(self, instructions: list[Instruction], broadcast_bytes: int) -> list[Instruction]:
        """Under `stragglers: partial`, cap each hospital's local steps at those that fit in the
        deadline once download and upload are paid for (the upload is reserved at the
        broadcast's size: an update is no larger than the model it came from, except under
        secure aggregation's 64-bit words, where a hospital that still overshoots is late)."""
        spec = self.spec
        if spec.stragglers != "partial" or spec.deadline is None or self.step_samples is None:
            return instructions
        planned = []
        for instruction in instructions:
            h = instruction.hospital
            links = self.download_seconds(h, broadcast_bytes) + broadcast_bytes / float(self.profiles.uplink[h])
            if self.compute_seconds(instruction) + links > spec.deadline:
                budget = max(0.0, spec.deadline - links) * float(self.profiles.samples_per_second[h])
                per_step = float(self.step_samples[h])  # type: ignore[index]
                steps = math.floor(budget / per_step) if per_step > 0 else 0
                instruction = replace(instruction, plan=replace(instruction.plan, max_steps=steps))
            planned.append(instruction)
        return planned

    def seconds(self, instruction: Instruction, upload_bytes: int, broadcast_bytes: int) -> float:
        """The hospital's download + compute + upload time."""
        h = instruction.hospital
        return self.download_seconds(h, broadcast_bytes) + self.compute_seconds(instruction) + upload_bytes / float(self.profiles.uplink[h])

    def drops_out(self, round_index: int, hospital: int) -> bool:
        """Whether `hospital` drops out of its work keyed `round_index` (stream SYSTEM_DROPOUT)."""
        return bool(rng_for(self.run_seed, Stream.SYSTEM_DROPOUT, round_index, hospital).random() < self.profiles.dropout[hospital])

    def settle(self, round_index: int, instructions: list[Instruction], reports: list[ClientReport], broadcast_bytes: int) -> RoundTimeline:
        """Who arrived when, who is kept, and how long the round lasted."""
        spec = self.spec
        uploads = {report.hospital: report.upload_bytes for report in reports}
        finish: dict[int, float] = {}
        status: dict[int, str] = {}
        for instruction in instructions:
            h = instruction.hospital
            if self.drops_out(round_index, h):
                finish[h], status[h] = NAN, DROPPED_OUT
                continue
            finish[h] = self.seconds(instruction, uploads[h], broadcast_bytes)
            status[h] = OK if instruction.plan.max_steps != 0 else LATE  # no step fits: nothing worth sending
        arriving = sorted((t, h) for h, t in finish.items() if status[h] == OK)
        awaited = arriving[: self.per_round] if spec.over_selection > 0 else arriving
        closes = awaited[-1][0] if awaited else 0.0
        if spec.deadline is not None:
            closes = min(closes, spec.deadline)
        waited_for = {h for _, h in awaited}
        for t, h in arriving:
            if h not in waited_for:
                status[h] = OVER_SELECTED  # beyond the first k: not needed
            elif t > closes:
                status[h] = LATE
        return RoundTimeline(finish, status, float(closes))
