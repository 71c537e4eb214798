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
    PARTIAL_WORK,
    POOLED_DATA,
    PROXIMAL,
    PROXIMAL_ANCHOR,
    SUBNETWORK,
    TRAINING_LOSS,
    VALIDATION_METRICS,
    VECTORIZED_TRAINING,
)
from fedsim.results import ROUNDS
from fedsim.tasks.registry import TaskSpec, register_task


def _build(config: Any, dataset: Any) -> Any:
    from fedsim.attacks import flip_labels
    from fedsim.data.federation import build_federation
    from fedsim.models import Pretrained, model_factory
    from fedsim.tasks.classification import ClassificationTask

    factory = model_factory(config.model.name)  # an unknown model fails before the data loads
    if config.model.weights is not None:
        factory = Pretrained(factory, config.model.weights, config.model.freeze_backbone)
    federation = flip_labels(build_federation(config.data, config.seed, dataset), config)
    vectorized = config.engine.vectorized_hospitals
    task = ClassificationTask(federation, factory, config.train, config.eval.batch_size, vectorized_hospitals=vectorized)
    if vectorized:
        refuse_unvectorizable_model(task, config.model.name)
    privacy = config.privacy
    if privacy is None or privacy.mechanism != "dp_sgd":
        return task
    from fedsim.privacy.dp_sgd import DPSGD, refuse_unsupported_model
    from fedsim.privacy.ledger import run_noise_multiplier

    refuse_unsupported_model(task.new_module(), config.model.name)
    task.dp_sgd = DPSGD(run_noise_multiplier(config, task.hospital_sizes()), privacy.clip_norm)
    return task


def refuse_unvectorizable_model(task: Any, name: str) -> None:
    """Try one vmapped step of the model before any round, so a model vmap cannot train (dropout,
    data-dependent control flow) is refused in one line instead of failing on the workers."""
    from fedsim.errors import ConfigError
    from fedsim.tasks.vectorized import vectorization_problem

    dataset = task.federation.dataset
    problem = vectorization_problem(task.new_module(), dataset.channels, dataset.test.images.shape[-1])
    if problem:
        raise ConfigError(f"engine.vectorized_hospitals: model {name} cannot be trained under torch.func.vmap ({problem}); "
                          "set engine.vectorized_hospitals: 0")


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
    capabilities=frozenset({
        PROXIMAL, GRADIENT_CORRECTION, FAIRNESS, PLAIN_SGD, NORMALIZATION_LAYERS, VALIDATION_METRICS, DP_SGD, SUBNETWORK, PARTIAL_WORK,
        VECTORIZED_TRAINING, POOLED_DATA, FINE_TUNING, HEAD_FIRST, PROXIMAL_ANCHOR, TRAINING_LOSS,
    }),
    num_hospitals=lambda config: config.data.hospitals,
    hospitals_key="data.hospitals",
    describe=_describe,
    compare_table=ROUNDS,
    compare_columns=(
        ("global_accuracy", "accuracy"),
        ("global_balanced_accuracy", "balanced acc."),
        ("global_macro_auc", "macro AUC"),
        ("global_quadratic_kappa", "quadratic κ"),
        ("global_weighted_f1", "weighted F1"),
        ("global_mcc", "MCC"),
        ("global_g_mean", "G-mean"),
        ("hospital_accuracy_mean", "mean hospital acc."),  # what a local-only row is read on
        ("hospital_quadratic_kappa_mean", "mean hospital κ"),
        ("hospital_accuracy_worst10", "worst-10% hospital acc."),
    ),
    report_columns=(
        ("global_accuracy", "accuracy"), ("global_balanced_accuracy", "bal. acc."), ("global_macro_auc", "macro AUC"),
        ("global_loss", "loss"), ("global_val_accuracy", "val acc."), ("global_val_balanced_accuracy", "val bal. acc."),
        ("global_val_loss", "val loss"),
    ),
    labels={
        "global_accuracy": "global test accuracy", "hospital_accuracy_worst10": "worst-10% hospital accuracy",
        "global_quadratic_kappa": "quadratically weighted Cohen's κ (global test)",
        "hospital_accuracy_mean": "mean accuracy at the hospitals (own test splits)",
        "hospital_quadratic_kappa_mean": "mean quadratic κ at the hospitals (own test splits)",
    },
    check=_check,
    heterogeneity_axes={
        "alpha": lambda alpha: {"data": {"partition": {"scheme": "dirichlet", "alpha": alpha}}},
        "eta": lambda eta: {"data": {"partition": {"scheme": "shards", "eta": eta}}},
    },
))
