"""FedMRL (Sahoo et al., arXiv 2407.05800), as the paper describes it.

1. A QMIX team (fedsim.fedmrl.qmix, on RLlib's new API stack) picks each sampled hospital's
   FedProx coefficient mu from a grid every round. An agent's observation is its own statistics
   from its last round (`OBSERVATION`); the mixer's global state is fixed-size whatever the cohort
   (`STATE`); the team reward is the change of a global validation metric after aggregation
   (`reward_form: level` rewards the metric itself, as the authors' code does). Exploration is
   epsilon-greedy, epsilon falling linearly from 1 to 0.05 over the first `epsilon_decay_fraction`
   of the run's rounds; rounds.parquet's strategy_qmix_transitions counts the joint transitions
   QMIX had learned from when the round aggregated (the run's last, terminal transition is
   stored after it: a run of R rounds learns from R - 1).
2. Local training adds the fairness term lambda * (L_h - L_global)^2 (see
   fedsim.tasks.classification.fairness_term) with the global loss of the last evaluation.
3. The server aggregates w <- w + sum_h a_h (w_h - w) with SOM weights a_h (fedsim.fedmrl.som),
   from count sketches of the updates the workers compute. The server sees only the sketches:
   the workers hold the updates until the weights come back and then send one weighted partial
   sum each, so the server's traffic does not grow with the cohort.

Where the authors' public code differs and we follow the paper instead: their code applies mu as
a post-training interpolation (we use the proximal term in the local objective), has no monotonic
mixing network (ours is QMIX's, with non-negative hypernetwork weights), and computes SOM weights
but never uses them (ours weight the aggregate and are logged per hospital). Their reward is the
level of global accuracy (a switch here: `reward_form: level`).

The strategy sees no test-set information: the reward and the fairness term's global loss come
from the validation split (`observe` gets val_* metrics only), and an agent's accuracy feature is
its training accuracy (the engine withholds hospitals' scores on their own test splits).

Transitions: round t's (observations, actions, state) get reward metric_t - metric_{t-1} (or
metric_t with `reward_form: level`) once
round t is evaluated, and become a joint transition when round t+1's cohort is observed (another
subset of hospitals; the mixer takes any set). Round 1 has no previous metric and is not stored;
the last round is stored as terminal.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field, field_validator

from fedsim.fedmrl.replay import JointTransition
from fedsim.fedmrl.som import CountSketch, SOMWeighting, layerwise_unit
from fedsim.params import Params, is_statistic, is_trained
from fedsim.protocol import FAIRNESS, PROXIMAL, VALIDATION_METRICS, Aggregate, ClientReport, Cohort, Instruction, LocalResult
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, step_trained, weighted_instructions

class FedMRLConfig(StrategyConfig):
    """FedMRL (arXiv 2407.05800). Each part can be switched off for ablations: `qmix: false` uses
    `fixed_mu` for every hospital, `fairness_lambda: 0` drops the fairness term, `som: false`
    weights by samples only."""

    name: Literal["fedmrl"] = "fedmrl"
    mu_grid: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 1.0)
    qmix: bool = True
    fixed_mu: float = Field(0.01, ge=0)
    fairness_lambda: float = Field(0.1, ge=0)
    som: bool = True
    som_grid: int = Field(4, ge=2)
    sketch_dim: int = Field(64, ge=4)
    reward: Literal["val_accuracy", "val_balanced_accuracy", "val_loss"] = "val_accuracy"
    reward_form: Literal["change", "level"] = "change"
    qmix_lr: float = Field(5e-3, gt=0)
    qmix_gamma: float = Field(0.9, ge=0, le=1)
    qmix_batch_size: int = Field(32, ge=1)
    qmix_updates_per_round: int = Field(4, ge=1)
    epsilon_decay_fraction: float = Field(0.5, gt=0, le=1, description="share of the run's rounds over which epsilon decays")

    @field_validator("mu_grid", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        values = tuple(value) if isinstance(value, (list, tuple)) else value
        if not isinstance(values, tuple) or not values or any(not isinstance(v, (int, float)) or v < 0 for v in values):
            raise ValueError(f"expected a non-empty list of proximal coefficients >= 0, got {value!r}")
        return tuple(float(v) for v in values)

    def build(self, config, task) -> "FedMRL":
        return FedMRL(self, config.rounds, config.clients_per_round(), config.seed)

    def requirements(self) -> Mapping[str, str]:
        needs = {VALIDATION_METRICS: f"its team reward is the {self.reward_form} of {self.reward}"}
        if (max(self.mu_grid) if self.qmix else self.fixed_mu) > 0:
            needs[PROXIMAL] = "QMIX chooses each hospital's proximal coefficient"
        if self.fairness_lambda > 0:
            needs[FAIRNESS] = "fairness_lambda > 0"
        return needs

    def check(self, config) -> None:
        if config.eval.every != 1:
            raise ValueError(f"eval.every: fedmrl learns from every round's evaluation, expected 1, got {config.eval.every}")


OBSERVATION = ("label_entropy", "sample_share", "loss", "accuracy", "loss_gap", "update_cosine", "mu", "seen")
STATE = ("mean_loss", "std_loss", "mean_accuracy", "std_accuracy", "mean_gap", "std_gap", "mean_cosine",
         "std_cosine", "progress", "global_metric", "global_loss")
_SKETCH = "sketch"


class FedMRL(Strategy):
    name = "fedmrl"
    weighs_after_training = True  # SOM weights need every hospital's sketch before weighting

    def __init__(self, spec: FedMRLConfig, total_rounds: int, max_cohort: int, seed: int) -> None:
        self.spec, self.total_rounds, self.max_cohort, self.seed = spec, total_rounds, max_cohort, seed
        self.sketch = CountSketch(spec.sketch_dim, seed)
        self.hospital_stats: dict[int, dict[str, float]] = {}
        self.last_metric: float | None = None
        self.global_loss = float("nan")
        self.pending: dict[str, Any] | None = None  # this round's decision, waiting for its reward
        self.td_loss = float("nan")
        self.overhead_seconds = 0.0  # this round's QMIX (act + learn) and SOM time on the server
        self._team: Any = None  # QMIXTeam, built on the server at the first configure
        self._som: SOMWeighting | None = None
        self._last_hospital_metrics: dict[int, dict[str, float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_team"] = state["_som"] = None  # workers need only the sketch; the server builds these
        return state

    # ----- RL side (server) ---------------------------------------------------------------------
    def team(self) -> Any:
        if self._team is None:
            from fedsim.fedmrl.qmix import QMIXSettings, QMIXTeam  # torch + RLlib: server only

            spec = self.spec
            self._team = QMIXTeam(QMIXSettings(
                num_actions=len(spec.mu_grid), obs_dim=len(OBSERVATION), state_dim=len(STATE),
                max_agents=self.max_cohort, lr=spec.qmix_lr, gamma=spec.qmix_gamma, batch_size=spec.qmix_batch_size,
                updates_per_step=spec.qmix_updates_per_round,
                epsilon_decay_steps=max(1, round(spec.epsilon_decay_fraction * self.total_rounds)),
                seed=seed_for(self.seed, Stream.FEDMRL),
            ))
        return self._team

    def observations(self, cohort: Cohort) -> np.ndarray:
        shares = sample_shares(cohort)
        rows = []
        for hospital, share in zip(cohort.hospitals, shares):
            known = self.hospital_stats.get(int(hospital), {})
            rows.append([known.get(f, 0.0) if f != "sample_share" else share for f in OBSERVATION])
        return np.array(rows, dtype=np.float32)

    def global_state(self, obs: np.ndarray, round_index: int) -> np.ndarray:
        columns = [OBSERVATION.index(f) for f in ("loss", "accuracy", "loss_gap", "update_cosine")]
        summary = [x for c in columns for x in (obs[:, c].mean(), obs[:, c].std())]
        last = self.last_metric if self.last_metric is not None else 0.0
        loss = self.global_loss if np.isfinite(self.global_loss) else 0.0
        return np.array([*summary, round_index / self.total_rounds, last, loss], dtype=np.float32)

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        grid = np.array(self.spec.mu_grid)
        started = time.perf_counter()
        if self.spec.qmix:
            obs = self.observations(cohort)
            state = self.global_state(obs, round_index)
            if self.pending is not None and self.pending["reward"] is not None:
                self._store(next_obs=obs, next_state=state, done=False)
            actions = self.team().act(obs)
            self.pending = {"obs": obs, "actions": actions, "state": state, "reward": None}
            mus = grid[actions]
        else:
            mus = np.full(len(cohort.hospitals), self.spec.fixed_mu)
        self.overhead_seconds = time.perf_counter() - started
        instructions = weighted_instructions(
            cohort, sample_shares(cohort), fairness_lambda=self.spec.fairness_lambda, global_loss=self.global_loss
        )
        return [replace(i, plan=replace(i.plan, mu=float(mu))) for i, mu in zip(instructions, mus)]

    def _store(self, next_obs: np.ndarray, next_state: np.ndarray, done: bool) -> None:
        p = self.pending
        assert p is not None and p["reward"] is not None
        transition = JointTransition(p["obs"], p["actions"], p["state"], p["reward"], next_obs, next_state, done)
        self.td_loss = self.team().record(transition)
        self.pending = None

    def observe(self, round_index: int, validation: dict[str, float]) -> None:
        metric = self.spec.reward
        value = float(validation.get(metric, float("nan")))
        if not np.isfinite(value):
            raise ValueError(f"strategy.reward: {metric} is not a finite validation metric of this round (got {value})")
        if self.pending is not None and self.last_metric is not None:
            self.pending["reward"] = self.reward(value, self.last_metric)
            if round_index == self.total_rounds:
                obs_dim = len(OBSERVATION)
                self._store(np.zeros((0, obs_dim), np.float32), np.zeros(len(STATE), np.float32), done=True)
        self.last_metric = value
        self.global_loss = float(validation.get("val_loss", float("nan")))

    def reward(self, value: float, previous: float) -> float:
        """The team reward for a round that moved the metric from `previous` to `value` (losses
        negated, so higher is always better)."""
        sign = -1.0 if self.spec.reward.endswith("loss") else 1.0
        return sign * (value - previous if self.spec.reward_form == "change" else value)

    # ----- hospital side (workers) ----------------------------------------------------------------
    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        """Unweighted: the update of each trained parameter, each local statistic, and the sketch."""
        deltas = {n: (a - broadcast[n]).astype(np.float32) for n, a in result.params.items() if is_trained(n, a)}
        stats = {n: a.astype(np.float32) for n, a in result.params.items() if is_statistic(n)}
        return {**deltas, **stats, _SKETCH: self.sketch(layerwise_unit(deltas))}

    def summary(self, contribution: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {_SKETCH: contribution[_SKETCH]}

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: object) -> tuple[None, dict[str, float]]:
        return None, {"mu": instruction.plan.mu}

    # ----- aggregation (server) -------------------------------------------------------------------
    def weigh(self, round_index: int, instructions: list[Instruction], reports: list[ClientReport],
              summaries: list[dict[str, np.ndarray]]) -> np.ndarray:
        """SOM weights times sample counts (or plain sample shares with `som: false`)."""
        sizes = np.array([r.num_samples for r in reports], dtype=np.float64)
        sketches = np.stack([s[_SKETCH] for s in summaries])
        started = time.perf_counter()
        if self.spec.som:
            if self._som is None:
                self._som = SOMWeighting(self.spec.sketch_dim, self.spec.som_grid, seed_for(self.seed, Stream.FEDMRL, 1))
            weights, densities = self._som.weights(sketches, sizes)
        else:
            weights, densities = sizes / sizes.sum(), np.ones(len(sizes))
        self.overhead_seconds += time.perf_counter() - started
        cosines = _cosines(sketches, weights @ sketches)
        self._remember(instructions, reports, weights, densities, cosines)
        return weights

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        updated = step_trained(broadcast, aggregate.total, lambda name, w, delta: w.astype(np.float64) + delta)
        metrics = {"mean_mu": float(np.mean([i.plan.mu for i in aggregate.instructions])),
                   "qmix_som_seconds": self.overhead_seconds,
                   "qmix_td_loss": self.td_loss,
                   "qmix_epsilon": self.team().epsilon() if self.spec.qmix else 0.0,
                   "qmix_transitions": float(len(self.team().buffer)) if self.spec.qmix else 0.0}
        return updated, metrics

    def _remember(self, instructions: list[Instruction], reports: list[ClientReport], weights: np.ndarray,
                  densities: np.ndarray, cosines: np.ndarray) -> None:
        grid = self.spec.mu_grid
        self._last_hospital_metrics = {}
        for instruction, report, weight, density, cosine in zip(instructions, reports, weights, densities, cosines):
            loss = float(report.metrics["train_loss"])
            gap = loss - self.global_loss if np.isfinite(self.global_loss) else 0.0
            mu = instruction.plan.mu
            mu_level = grid.index(mu) / max(1, len(grid) - 1) if mu in grid else 0.0
            self.hospital_stats[instruction.hospital] = {
                "label_entropy": float(report.metrics.get("label_entropy", 0.0)), "loss": loss,
                "accuracy": float(report.metrics.get("train_accuracy", 0.0)), "loss_gap": gap,
                "update_cosine": float(cosine), "mu": mu_level, "seen": 1.0,
            }
            self._last_hospital_metrics[instruction.hospital] = {"som_weight": float(weight), "som_density": float(density)}

    def hospital_metrics(self) -> dict[int, dict[str, float]]:
        return self._last_hospital_metrics

    def get_state(self) -> dict[str, Any]:
        """Everything the server learned (QMIX learner, replay, schedule, SOM), for checkpoints."""
        return {"team": self.team().get_state() if self.spec.qmix else None, "som": self._som,
                "hospital_stats": dict(self.hospital_stats), "last_metric": self.last_metric,
                "global_loss": self.global_loss, "pending": self.pending, "td_loss": self.td_loss}

    def set_state(self, state: dict[str, Any]) -> None:
        if state["team"] is not None:
            self.team().set_state(state["team"])
        self._som = state["som"]
        self.hospital_stats = dict(state["hospital_stats"])
        self.last_metric, self.global_loss, self.pending = state["last_metric"], state["global_loss"], state["pending"]
        self.td_loss = state["td_loss"]


def _cosines(sketches: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(sketches, axis=1) * np.linalg.norm(aggregate)
    return np.where(norms > 0, sketches @ aggregate / np.where(norms > 0, norms, 1.0), 0.0)
