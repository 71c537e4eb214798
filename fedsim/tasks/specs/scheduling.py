"""Patient scheduling at each hospital (fedsim.tasks.scheduling), configured by its own
`scheduling` section. Its DQN trains with Adam at `scheduling.dqn.lr`, so it offers strategies no
plain SGD (SCAFFOLD's option-II control variates and FedNova's a_k assume it) and its Q-network
has no normalisation layers (FedBN's), nor validation accuracy (FedMRL's reward). Its learner
state (replay buffer, target network, exploration schedule) belongs to one Q-network trained
one way, so it offers neither FedRep's head-then-body training nor Ditto's second, personal
model, and IFCA's cluster choice would need a loss on training data, which a replay buffer
(empty before a hospital's first round) does not give: those strategies are refused with one
line. Fine-tuning before evaluation and FedPer's local head apply."""

from __future__ import annotations

from typing import Any

from fedsim.errors import ConfigError
from fedsim.protocol import FINE_TUNING, GRADIENT_CORRECTION, PARTIAL_WORK, PROXIMAL
from fedsim.results import HOSPITAL_EVAL
from fedsim.scheduling.config import SchedulingConfig
from fedsim.tasks.registry import TaskSpec, register_task


def _build(config: Any, dataset: Any) -> Any:
    from fedsim.tasks.scheduling import SchedulingTask

    if dataset is not None:
        raise ConfigError("dataset: task scheduling draws its hospitals' environments; it takes no dataset")
    return SchedulingTask(config.scheduling, config.seed)


def _describe(config: Any) -> str:
    scheduling = config.scheduling
    learner = "centralised dqn" if scheduling.centralised else scheduling.policy
    return f"scheduling with {learner}, {scheduling.hospitals} hospitals"


def _check(config: Any) -> None:
    scheduling, strategy = config.scheduling, config.strategy.name
    if scheduling.policy != "dqn" and strategy != "fedavg":
        raise ValueError(f"strategy.name: scheduling.policy {scheduling.policy} trains nothing; expected fedavg, got {strategy}")
    if scheduling.centralised:
        if strategy != "fedavg":
            raise ValueError(f"strategy.name: scheduling.centralised needs fedavg, got {strategy}")
        if config.sampling.clients_per_round not in ("all", 1.0, scheduling.hospitals):
            raise ValueError("sampling.clients_per_round: scheduling.centralised needs every hospital every round (all)")


SCHEDULING = register_task(TaskSpec(
    name="scheduling",
    build=_build,
    capabilities=frozenset({PROXIMAL, GRADIENT_CORRECTION, PARTIAL_WORK, FINE_TUNING}),
    num_hospitals=lambda config: config.scheduling.hospitals,
    hospitals_key="scheduling.hospitals",
    describe=_describe,
    compare_table=HOSPITAL_EVAL,
    compare_columns=(
        ("acuity_weighted_wait", "acuity-weighted wait (h)"),
        ("wait_p95_acuity_1_2", "p95 wait, acuity 1-2 (h)"),
        ("utilisation", "utilisation"),
    ),
    headline="global_acuity_weighted_wait",
    higher_is_better=False,
    report_columns=(
        ("global_acuity_weighted_wait", "weighted wait"), ("global_wait_p95_acuity_1_2", "p95 acu. 1-2"),
        ("global_utilisation", "utilisation"), ("global_wait_mean", "mean wait"), ("global_wait_p95", "p95 wait"),
        ("global_completed_high_acuity", "acu. 1-2 done"), ("global_transfers", "transfers"),
        ("global_episode_return", "return"),
    ),
    labels={"global_acuity_weighted_wait": "acuity-weighted wait (h)",
            "hospital_acuity_weighted_wait_worst10": "worst-10% hospital acuity-weighted wait (h)"},
    section="scheduling",
    section_model=SchedulingConfig,
    check=_check,
))
