"""One hospital's dynamics: a multi-level feedback queue (MLFQ) of waiting patients, limited
resources, Poisson arrivals, priority boosts, surge capacity and transfers out.

Plain Python and numpy so the gymnasium env, the RLlib network env and the tests share it.

Actions (with Q queues, queue 0 the highest priority): `q` in 0..Q-1 admits the head of queue q;
`Q` (ALLOCATE) opens a surge unit; `Q+1` (TRANSFER) sends the head of the highest non-empty
queue to another hospital. One step, in order:

1. the action at time `now`;
2. the clock advances; patients whose service ends by the new time leave, surge units expire;
3. this step's arrivals (Poisson at the hour's rate) join the queue of their acuity;
4. every patient who has spent `boost_hours[q-1]` in queue q >= 1 moves to the tail of queue q-1
   (keeping their order; the time in the new queue restarts, so at most one move per step);
5. the reward (fedsim.scheduling.reward) of the end-of-step state and the step's events.

Invalid-action rule: an action that cannot take effect — serving an empty queue, serving a head
patient whose bed, staff slot or (acuity 1-2) equipment unit is not free, allocating with every
surge unit already open, transferring with every queue empty — is a no-op: the clock advances as
for any action, nothing else changes, there is no extra penalty, and the step reports `invalid`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from fedsim.scheduling.config import HIGH_ACUITY, EnvConfig, RewardConfig
from fedsim.scheduling.profiles import HospitalProfile
from fedsim.scheduling.reward import StepFacts, step_reward

HOURS_PER_WEEK = 168


@dataclass(slots=True)
class Patient:
    arrival: int  # step of arrival at the first hospital (waiting time counts from here)
    acuity: int  # 1 (most urgent) .. 5
    service: int  # service time in steps, drawn on arrival
    entered: int  # step of entering the current queue (the boost clock)


@dataclass
class StepEvents:
    start: int  # the step's time (`now` when the action was taken)
    reward: float = 0.0
    invalid: bool = False
    admitted: list[Patient] = field(default_factory=list)  # with their waits in `waits`
    waits: list[int] = field(default_factory=list)  # steps each admitted patient waited
    transferred: list[Patient] = field(default_factory=list)
    completed: list[Patient] = field(default_factory=list)
    surge_opened: int = 0
    arrivals: int = 0
    arrival_hour: int = 0  # hour of the week of this step's arrivals


def action_count(queues: int) -> int:
    """Serve one of `queues` queues, allocate, transfer."""
    return queues + 2


def needs(patient: Patient) -> tuple[int, int, int]:
    """Beds, staff slots and equipment units the patient holds while in service."""
    return 1, 1, int(patient.acuity <= HIGH_ACUITY)


class Hospital:
    def __init__(
        self, profile: HospitalProfile, env: EnvConfig, reward: RewardConfig, rng: np.random.Generator, start_hour: int
    ) -> None:
        self.profile = profile
        self.env = env
        self.reward_weights = reward
        self.rng = rng
        self.start_hour = start_hour % HOURS_PER_WEEK
        self.steps_per_hour = env.steps_per_hour
        self.dt = 1.0 / self.steps_per_hour
        self.boost_steps = [env.steps(hours) for hours in env.boost_hours]  # for queues 1..Q-1
        self.transfer_steps = env.steps(env.transfer_hours)
        self.surge_steps = env.steps(env.surge_hours)
        self.queues: list[deque[Patient]] = [deque() for _ in range(env.queues)]
        self.in_service: list[tuple[int, Patient]] = []  # (step the service ends, patient)
        self.surge: list[int] = []  # expiry step of each open surge unit
        self.now = 0
        self._mix_cdf = np.cumsum(profile.acuity_mix)
        self._service_hours = np.asarray(env.service_hours, dtype=np.float64)
        self._busy_equipment = 0  # acuity 1-2 patients in service
        self.acuity_sums = [0] * env.queues  # sum of the acuities in each queue
        self.waiting_by_acuity = [0] * len(profile.acuity_mix)  # waiting patients of acuity 1..5

    # ----- clock and arrivals ------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        return action_count(len(self.queues))

    @property
    def allocate_action(self) -> int:
        return len(self.queues)

    @property
    def transfer_action(self) -> int:
        return len(self.queues) + 1

    def hour_of_week(self, step: int | None = None) -> int:
        step = self.now if step is None else step
        return (self.start_hour + step // self.steps_per_hour) % HOURS_PER_WEEK

    def rate(self, hour_of_week: int) -> float:
        """Expected arrivals per hour during that hour of the week (Monday 00:00 is hour 0)."""
        hour_of_week %= HOURS_PER_WEEK
        day, hour = divmod(hour_of_week, 24)
        return self.profile.arrival_rate * self.env.hour_profile[hour] * self.env.day_profile[day]

    def forecast(self) -> float:
        """Expected arrivals in the next clock hour (the profile's mean, not the realisation)."""
        return self.rate(self.hour_of_week() + 1)

    def _arrive(self, step: int) -> tuple[int, int]:
        """Draw the arrivals during `step` (stamped with it) and queue them; returns (count, hour)."""
        hour = self.hour_of_week(step)
        count = int(self.rng.poisson(self.rate(hour) * self.dt))
        if count:
            drawn = np.searchsorted(self._mix_cdf, self.rng.random(count), side="right")
            acuities = np.minimum(drawn, len(self._mix_cdf) - 1) + 1  # the min guards against rounding in the cdf
            hours = self.rng.exponential(size=count) * self._service_hours[acuities - 1]
            for acuity, duration in zip(acuities.tolist(), hours.tolist()):
                patient = Patient(step, acuity, max(1, math.ceil(duration * self.steps_per_hour)), step)
                self.enqueue(self.env.start_queue[acuity - 1], patient)
        return count, hour

    def receive(self, patient: Patient) -> None:
        """Queue a patient transferred in, by acuity; their boost clock starts now, their wait goes on."""
        patient.entered = self.now
        self.enqueue(self.env.start_queue[patient.acuity - 1], patient)

    # ----- queues (all changes go through these two, which keep the running sums) ---------------
    def enqueue(self, q: int, patient: Patient) -> None:
        """Append a patient to queue q (also how tests build a state by hand)."""
        self.queues[q].append(patient)
        self.acuity_sums[q] += patient.acuity
        self.waiting_by_acuity[patient.acuity - 1] += 1

    def _pop(self, q: int) -> Patient:
        patient = self.queues[q].popleft()
        self.acuity_sums[q] -= patient.acuity
        self.waiting_by_acuity[patient.acuity - 1] -= 1
        return patient

    @property
    def num_waiting(self) -> int:
        return sum(self.waiting_by_acuity)

    # ----- resources ---------------------------------------------------------------------------
    def used(self) -> tuple[int, int, int]:
        return len(self.in_service), len(self.in_service), self._busy_equipment

    def nominal(self) -> tuple[int, int, int]:
        return self.profile.beds, self.profile.staff, self.profile.equipment

    def capacity(self) -> tuple[int, int, int]:
        """Nominal resources plus one of each per open surge unit."""
        beds, staff, equipment = self.nominal()
        extra = len(self.surge)
        return beds + extra, staff + extra, equipment + extra

    def fits(self, patient: Patient) -> bool:
        return all(u + n <= c for u, n, c in zip(self.used(), needs(patient), self.capacity()))

    def highest_nonempty(self) -> int | None:
        return next((q for q, queue in enumerate(self.queues) if queue), None)

    def valid_actions(self) -> np.ndarray:
        """Which actions would take effect now (the complement of the invalid-action rule); when
        none would, all are marked valid, being the same no-op. Learners use it as an action mask."""
        valid = [bool(queue) and self.fits(queue[0]) for queue in self.queues]
        valid += [len(self.surge) < self.profile.surge_units, self.num_waiting > 0]
        mask = np.asarray(valid, dtype=bool)
        return mask if mask.any() else np.ones_like(mask)

    def waiting(self) -> list[Patient]:
        return [patient for queue in self.queues for patient in queue]

    # ----- one step ----------------------------------------------------------------------------
    def step(self, action: int) -> StepEvents:
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action: expected 0..{self.num_actions - 1}, got {action}")
        start = self.now
        events = StepEvents(start)
        events.invalid = not self._act(action, events)
        self.now = start + 1
        events.completed = [patient for end, patient in self.in_service if end <= self.now]
        if events.completed:
            self.in_service = [(end, patient) for end, patient in self.in_service if end > self.now]
            self._busy_equipment -= sum(needs(patient)[2] for patient in events.completed)
        self.surge = [expiry for expiry in self.surge if expiry > self.now]
        events.arrivals, events.arrival_hour = self._arrive(start)
        self._boost()
        events.reward = step_reward(self.reward_weights, self.dt, self.transfer_steps * self.dt, self._facts(events))
        return events

    def _boost(self) -> None:
        """Move patients who have waited their queue's boost time up one queue (queue order kept)."""
        for q in range(1, len(self.queues)):
            queue = self.queues[q]
            # entry times are non-decreasing along a queue, so the boosted patients are a prefix
            while queue and self.now - queue[0].entered >= self.boost_steps[q - 1]:
                patient = self._pop(q)
                patient.entered = self.now
                self.enqueue(q - 1, patient)

    def _facts(self, events: StepEvents) -> StepFacts:
        over = sum(max(0, u - n) for u, n in zip(self.used(), self.nominal()))
        return StepFacts(
            waiting_by_acuity=list(self.waiting_by_acuity),
            queue_lengths=[len(queue) for queue in self.queues],
            high_acuity_completed=sum(1 for patient in events.completed if patient.acuity <= HIGH_ACUITY),
            over_capacity=over,
            surge_opened=events.surge_opened,
            transferred_acuities=[patient.acuity for patient in events.transferred],
        )

    def _act(self, action: int, events: StepEvents) -> bool:
        """Apply the action at `now`; False when it cannot take effect (the no-op rule)."""
        if action < len(self.queues):
            queue = self.queues[action]
            if not queue or not self.fits(queue[0]):
                return False
            patient = self._pop(action)
            self.in_service.append((self.now + patient.service, patient))
            self._busy_equipment += needs(patient)[2]
            events.admitted.append(patient)
            events.waits.append(self.now - patient.arrival)
            return True
        if action == self.allocate_action:
            if len(self.surge) >= self.profile.surge_units:
                return False
            self.surge.append(self.now + self.surge_steps)
            events.surge_opened = 1
            return True
        source = self.highest_nonempty()
        if source is None:
            return False
        events.transferred.append(self._pop(source))
        return True
