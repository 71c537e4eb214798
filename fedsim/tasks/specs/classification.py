"""Image classification at each hospital (fedsim.tasks.classification), configured by the `data`,
`model` and `train` sections."""

from __future__ import annotations

from typing import Any

from fedsim.protocol import (
    DP_SGD,
    FAIRNESS,
    FINE_TUNING,
    GRADIENT_CORRECTION,
    HEAD_FIRST,
    NORMALIZATION_LAYERS,
    PLAIN_SGD,
    PROXIMAL,
    PROXIMAL_ANCHOR,
    TRAINING_LOSS,
    VALIDATION_METRICS,
)
from fedsim.results import ROUNDS
from fedsim.tasks.registry import TaskSpec, register_task


def _build(config: Any, dataset: Any) -> Any:
    from fedsim.attacks import flip_labels
    from fedsim.data.federation import build_federation
    from fedsim.models import model_factory
    from fedsim.tasks.classification import ClassificationTask

    factory = model_factory(config.model.name)  # an unknown model fails before the data loads
    federation = flip_labels(build_federation(config.data, config.seed, dataset), config)
    task = ClassificationTask(federation, factory, config.train, config.eval.batch_size)
    privacy = config.privacy
    if privacy is None or privacy.mechanism != "dp_sgd":
        return task
    from fedsim.privacy.dp_sgd import DPSGD, refuse_unsupported_model
    from fedsim.privacy.ledger import run_noise_multiplier

    refuse_unsupported_model(task.new_module(), config.model.name)
    task.dp_sgd = DPSGD(run_noise_multiplier(config, task.hospital_sizes()), privacy.clip_norm)
    return task


def _describe(config: Any) -> str:
    data = config.data
    return f"data {data.source.kind}, {data.hospitals} hospitals ({data.partition.scheme} partition)"


def _check(config: Any) -> None:
    source = config.data.source
    if source.kind == "synthetic" and config.data.hospitals > source.train_samples:
        raise ValueError(
            f"data.hospitals: expected at most data.source.train_samples ({source.train_samples}), got {config.data.hospitals}"
        )


CLASSIFICATION = register_task(TaskSpec(
    name="classification",
    build=_build,
    capabilities=frozenset({PROXIMAL, GRADIENT_CORRECTION, FAIRNESS, PLAIN_SGD, NORMALIZATION_LAYERS, VALIDATION_METRICS, DP_SGD,
                        FINE_TUNING, HEAD_FIRST, PROXIMAL_ANCHOR, TRAINING_LOSS}),
    num_hospitals=lambda config: config.data.hospitals,
    hospitals_key="data.hospitals",
    describe=_describe,
    compare_table=ROUNDS,
    compare_columns=(
        ("global_accuracy", "accuracy"),
        ("global_balanced_accuracy", "balanced acc."),
        ("global_macro_auc", "macro AUC"),
        ("hospital_accuracy_worst10", "worst-10% hospital acc."),
    ),
    report_columns=(
        ("global_accuracy", "accuracy"), ("global_balanced_accuracy", "bal. acc."), ("global_macro_auc", "macro AUC"),
        ("global_loss", "loss"), ("global_val_accuracy", "val acc."), ("global_val_balanced_accuracy", "val bal. acc."),
        ("global_val_loss", "val loss"),
    ),
    labels={"global_accuracy": "global test accuracy", "hospital_accuracy_worst10": "worst-10% hospital accuracy"},
    check=_check,
    heterogeneity_axes={
        "alpha": lambda alpha: {"data": {"partition": {"scheme": "dirichlet", "alpha": alpha}}},
        "eta": lambda eta: {"data": {"partition": {"scheme": "shards", "eta": eta}}},
    },
))
