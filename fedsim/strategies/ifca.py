"""IFCA (Ghosh et al., 2020): K cluster models; each hospital joins the one that fits it best.

The server holds K models w_1..w_K (all in the broadcast, as `cluster<j>/<name>`). Each sampled
hospital k picks

    j(k) = argmin_j F_k(w_j)      (its loss on its own training data, never test data; the
                                   first cluster on a tie)

trains w_{j(k)} and sends its model for that cluster alone; each cluster averages its members:

    w_j <- sum_{k: j(k) = j} n_k w_k / sum_{k: j(k) = j} n_k      (a cluster nobody chose stays).

Cluster 1's initial model is the run's (so K = 1 is FedAvg bit for bit); the others are drawn
from Stream.CLUSTER_INIT. Each hospital's choice is logged as `cluster` in clients.parquet, and a
hospital is scored with the cluster it would choose now (the same rule on the new models; so a
hospital never sampled is scored too). The global_* columns and model.pt are the cluster most
hospitals chose in the last round. The cluster models are the broadcast, so a checkpoint holds
them; the choices are a pure function of them and of each hospital's data, so resume is bitwise.
"""

from __future__ import annotations

from typing import Literal, Mapping

import numpy as np
from pydantic import Field

from fedsim.params import Params
from fedsim.protocol import TRAINING_LOSS, Aggregate, Cohort, Instruction, LocalResult
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.base import Strategy, StrategyConfig, sample_shares, weighted_instructions
from fedsim.strategies.fedavg import weighted_params

_MEMBERS = "ifca.members"  # hospitals per cluster in the last round (the global model is the largest)


class IFCAConfig(StrategyConfig):
    """IFCA: `clusters` models; each hospital trains the one of lowest loss on its training data."""

    name: Literal["ifca"] = "ifca"
    clusters: int = Field(2, ge=1)

    def build(self, config, task) -> "IFCA":
        others = [task.initial_params(seed_for(config.seed, Stream.CLUSTER_INIT, j)) for j in range(1, self.clusters)]
        return IFCA(others)

    def requirements(self) -> Mapping[str, str]:
        return {TRAINING_LOSS: "each hospital picks the cluster model of lowest loss on its training data"}


def cluster_key(cluster: int, name: str) -> str:
    return f"cluster{cluster}/{name}"


class IFCA(Strategy):
    name = "ifca"

    def __init__(self, other_initial_models: list[Params]) -> None:
        self.other_initial_models = other_initial_models
        self.clusters = 1 + len(other_initial_models)

    def initial_broadcast(self, params: Params) -> Params:
        broadcast = {cluster_key(j, name): array for j, model in enumerate([params, *self.other_initial_models])
                     for name, array in model.items()}
        return {**broadcast, _MEMBERS: np.zeros(self.clusters)}

    def models(self, broadcast: Params) -> list[Params]:
        names = [key.removeprefix("cluster0/") for key in broadcast if key.startswith("cluster0/")]
        return [{name: broadcast[cluster_key(j, name)] for name in names} for j in range(self.clusters)]

    def global_params(self, broadcast: Params) -> Params:
        return self.models(broadcast)[int(np.argmax(broadcast[_MEMBERS]))]

    def configure(self, round_index: int, cohort: Cohort) -> list[Instruction]:
        return weighted_instructions(cohort, sample_shares(cohort))

    def contribution(self, result: LocalResult, instruction: Instruction, broadcast: Params) -> dict[str, np.ndarray]:
        return {cluster_key(instruction.model, name): share for name, share in weighted_params(result, instruction).items()}

    def local_state(self, result: LocalResult, instruction: Instruction, broadcast: Params, state: object) -> tuple[None, dict[str, float]]:
        return None, {"cluster": float(instruction.model)}

    def aggregate(self, round_index: int, broadcast: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        """Each chosen cluster's weighted mean over its members: its sum scaled by (all kept
        weight / its members' weight), so one cluster holding everyone is FedAvg exactly."""
        weights = [instruction.weight for instruction in aggregate.instructions]
        choices = [int(report.metrics["cluster"]) for report in aggregate.reports]
        kept = sum(weights)
        updated = dict(broadcast)
        members = np.zeros(self.clusters)
        for cluster in range(self.clusters):
            mass = sum(weight for weight, choice in zip(weights, choices) if choice == cluster)
            members[cluster] = choices.count(cluster)
            if mass == 0:
                continue
            scale = kept / mass
            prefix = cluster_key(cluster, "")
            for key, total in aggregate.total.items():
                if key.startswith(prefix):
                    updated[key] = (total * scale).astype(broadcast[key].dtype)
        updated[_MEMBERS] = members
        return updated, {f"cluster{j}_hospitals": float(n) for j, n in enumerate(members)}
