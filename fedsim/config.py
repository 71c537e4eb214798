"""Typed, validated run configuration.

Every run is described by one `Config`. Validation happens before Ray starts, so a typo costs
a one-line error (naming the field and what was expected), not a half-started cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedsim.scheduling.config import SchedulingConfig


class ConfigError(ValueError):
    """A configuration problem, phrased as one line that names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ----- data sources -------------------------------------------------------------------------
class SyntheticSource(_Strict):
    """Generated medical-like images: needs no download, the quickstart default."""

    kind: Literal["synthetic"] = "synthetic"
    classes: int = Field(4, ge=2)
    train_samples: int = Field(4000, ge=1)
    test_samples: int = Field(1000, ge=1)
    image_size: int = Field(28, ge=8)
    channels: Literal[1, 3] = 1


class MedMNISTSource(_Strict):
    """A MedMNIST `.npz` file with its official train/val/test splits."""

    kind: Literal["medmnist"]
    path: str


class ISIC2018Source(_Strict):
    """The ISIC 2018 Task 3 folder layout (images + one-hot ground-truth CSV)."""

    kind: Literal["isic2018"]
    root: str
    image_size: int = Field(28, ge=8)


class MessidorSource(_Strict):
    """Messidor image folders with retinopathy-grade annotations."""

    kind: Literal["messidor"]
    root: str
    image_size: int = Field(28, ge=8)


Source = Annotated[
    Union[SyntheticSource, MedMNISTSource, ISIC2018Source, MessidorSource],
    Field(discriminator="kind"),
]


# ----- partitions ---------------------------------------------------------------------------
class IIDPartition(_Strict):
    scheme: Literal["iid"] = "iid"


class DirichletPartition(_Strict):
    """Label skew: each class spread over hospitals by Dir(alpha) proportions."""

    scheme: Literal["dirichlet"]
    alpha: float = Field(gt=0)
    min_samples: int = Field(2, ge=1)


class ShardPartition(_Strict):
    """FedMRL's shard split: a class's shards stay with its home hospitals with probability eta."""

    scheme: Literal["shards"]
    eta: float = Field(ge=0, le=1)
    shards_per_class: int = Field(10, ge=1)


class QuantityPartition(_Strict):
    """Quantity skew: log-normal hospital sizes, labels IID within each hospital."""

    scheme: Literal["quantity"]
    sigma: float = Field(gt=0)
    min_samples: int = Field(2, ge=1)


Partition = Annotated[
    Union[IIDPartition, DirichletPartition, ShardPartition, QuantityPartition],
    Field(discriminator="scheme"),
]


class DataConfig(_Strict):
    source: Source = SyntheticSource()
    hospitals: int = Field(20, ge=1)
    partition: Partition = DirichletPartition(scheme="dirichlet", alpha=0.5)
    local_test_fraction: float = Field(0.2, ge=0, lt=1)
    scanner_shift: float = Field(0.0, ge=0, description="strength of per-hospital scanner-like feature shift; 0 = none")


# ----- learning -----------------------------------------------------------------------------
class ModelConfig(_Strict):
    name: Literal["small_cnn", "resnet18"] = "small_cnn"


class TrainConfig(_Strict):
    """Local training at each hospital (mini-batch SGD).

    `epochs_mode` sets how much local work each hospital does (FedNova's system heterogeneity):
    "fixed" gives every hospital `epochs`; "proportional" gives the largest hospital `max_epochs`
    and the others epochs in proportion to their size (at least `epochs`); "uniform" draws each
    hospital's epochs every round from {epochs, ..., max_epochs}.
    """

    epochs: int = Field(2, ge=1)
    epochs_mode: Literal["fixed", "proportional", "uniform"] = "fixed"
    max_epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _epoch_range(self) -> "TrainConfig":
        if self.epochs_mode != "fixed":
            if self.max_epochs is None:
                raise ValueError(f"train.max_epochs: required when train.epochs_mode is {self.epochs_mode}")
            if self.max_epochs < self.epochs:
                raise ValueError(f"train.max_epochs: expected at least train.epochs ({self.epochs}), got {self.max_epochs}")
        return self


class FedAvgConfig(_Strict):
    name: Literal["fedavg"] = "fedavg"


class FedProxConfig(_Strict):
    """FedProx: local objective + (mu/2)||w - w_global||^2."""

    name: Literal["fedprox"]
    mu: float = Field(0.01, ge=0)


class FedNovaConfig(_Strict):
    name: Literal["fednova"]


class FedBNConfig(_Strict):
    name: Literal["fedbn"]


class ScaffoldConfig(_Strict):
    name: Literal["scaffold"]
    server_lr: float = Field(1.0, gt=0)


class FedAdaptiveConfig(_Strict):
    """FedAdam / FedYogi server optimisers (Reddi et al. 2021), defaults from their experiments."""

    name: Literal["fedadam", "fedyogi"]
    server_lr: float = Field(0.01, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)


class FedMRLConfig(_Strict):
    """FedMRL (arXiv 2407.05800). Each part can be switched off for ablations: `qmix: false` uses
    `fixed_mu` for every hospital, `fairness_lambda: 0` drops the fairness term, `som: false`
    weights by samples only."""

    name: Literal["fedmrl"]
    mu_grid: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 1.0)
    qmix: bool = True
    fixed_mu: float = Field(0.01, ge=0)
    fairness_lambda: float = Field(0.1, ge=0)
    som: bool = True
    som_grid: int = Field(4, ge=2)
    sketch_dim: int = Field(64, ge=4)
    reward: Literal["val_accuracy", "val_balanced_accuracy", "val_loss", "accuracy", "balanced_accuracy", "loss"] = "val_accuracy"
    qmix_lr: float = Field(5e-3, gt=0)
    qmix_gamma: float = Field(0.9, ge=0, le=1)
    qmix_batch_size: int = Field(32, ge=1)
    qmix_updates_per_round: int = Field(4, ge=1)
    epsilon_decay_rounds: int = Field(20, ge=1)

    @field_validator("mu_grid", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        values = tuple(value) if isinstance(value, (list, tuple)) else value
        if not isinstance(values, tuple) or not values or any(not isinstance(v, (int, float)) or v < 0 for v in values):
            raise ValueError(f"expected a non-empty list of proximal coefficients >= 0, got {value!r}")
        return tuple(float(v) for v in values)


class LocalOnlyConfig(_Strict):
    """No federation: every hospital trains and keeps its own model (the local-only baseline)."""

    name: Literal["local_only"]


Strategy = Annotated[
    Union[FedAvgConfig, FedProxConfig, FedNovaConfig, FedBNConfig, ScaffoldConfig, FedAdaptiveConfig, LocalOnlyConfig, FedMRLConfig],
    Field(discriminator="name"),
]


class SamplingConfig(_Strict):
    """Which hospitals train each round: "all", a count (int >= 1) or a fraction (float in (0, 1])."""

    clients_per_round: Any = "all"

    @field_validator("clients_per_round")
    @classmethod
    def _count_or_fraction(cls, value: Any) -> Any:
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        if isinstance(value, float) and 0 < value <= 1:
            return value
        raise ValueError(f'expected "all", an integer >= 1 or a fraction in (0, 1], got {value!r}')


class EngineConfig(_Strict):
    """The worker pool: `workers` Ray actors, each pinned to num_cpus and a (fractional) num_gpus."""

    workers: Any = 2
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)

    @field_validator("workers")
    @classmethod
    def _count_or_per_hospital(cls, value: Any) -> Any:
        if value == "per_hospital" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f'expected an integer >= 1 or "per_hospital", got {value!r}')


class EvalConfig(_Strict):
    """When the new global model is scored, and on which hospitals' own test splits: "all"
    registered hospitals, or only the round's "sampled" ones (keeps a round's cost proportional
    to the cohort when thousands of hospitals are registered)."""

    every: int = Field(1, ge=1, description="evaluate the global model every N rounds (and after the last)")
    hospitals: Literal["all", "sampled"] = "all"
    batch_size: int = Field(512, ge=1)


class Config(_Strict):
    """A run. `task` picks the workload: "classification" (images; the `data` and `model` sections)
    or "scheduling" (patient scheduling; the `scheduling` section, which only that task accepts;
    `data` and `model` are then ignored, and of `train` only `epochs`, `epochs_mode` and
    `max_epochs` apply, counted in `scheduling.dqn.steps_per_epoch` environment steps)."""

    seed: int = 0
    rounds: int = Field(15, ge=1)
    task: Literal["classification", "scheduling"] = "classification"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    strategy: Strategy = FedAvgConfig()
    sampling: SamplingConfig = SamplingConfig()
    engine: EngineConfig = EngineConfig()
    eval: EvalConfig = EvalConfig()
    scheduling: SchedulingConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _scheduling_defaults(cls, raw: Any) -> Any:
        """`task: scheduling` without a scheduling section means its defaults."""
        if isinstance(raw, dict) and raw.get("task") == "scheduling" and raw.get("scheduling") is None:
            return {**raw, "scheduling": {}}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        self._check_scheduling()
        if isinstance(self.strategy, FedMRLConfig) and self.eval.every != 1:
            raise ValueError(f"eval.every: fedmrl learns from every round's evaluation, expected 1, got {self.eval.every}")
        per_round = self.sampling.clients_per_round
        if isinstance(per_round, int) and per_round > self.num_hospitals():
            where = "scheduling.hospitals" if self.scheduling else "data.hospitals"
            raise ValueError(
                f"sampling.clients_per_round: expected at most {where} ({self.num_hospitals()}), got {per_round}"
            )
        source = self.data.source
        if (
            self.task == "classification"
            and isinstance(source, SyntheticSource)
            and self.data.hospitals > source.train_samples
        ):
            raise ValueError(
                f"data.hospitals: expected at most data.source.train_samples ({source.train_samples}), "
                f"got {self.data.hospitals}"
            )
        return self

    def _check_scheduling(self) -> None:
        scheduling = self.scheduling
        if scheduling is None:
            return
        if self.task != "scheduling":
            raise ValueError(f"scheduling: only used when task is scheduling (task is {self.task})")
        if isinstance(self.strategy, FedMRLConfig):
            raise ValueError("strategy.name: fedmrl's reward reads classification metrics, which task scheduling has not")
        if scheduling.policy != "dqn" and not isinstance(self.strategy, FedAvgConfig):
            raise ValueError(
                f"strategy.name: scheduling.policy {scheduling.policy} trains nothing; "
                f"expected fedavg, got {self.strategy.name}"
            )
        if scheduling.centralised:
            if not isinstance(self.strategy, FedAvgConfig):
                raise ValueError(f"strategy.name: scheduling.centralised needs fedavg, got {self.strategy.name}")
            if self.sampling.clients_per_round not in ("all", 1.0, scheduling.hospitals):
                raise ValueError("sampling.clients_per_round: scheduling.centralised needs every hospital every round (all)")

    def num_hospitals(self) -> int:
        """The federation's size: data.hospitals, or scheduling.hospitals for the scheduling task."""
        return self.scheduling.hospitals if self.scheduling is not None else self.data.hospitals

    def clients_per_round(self) -> int:
        """How many hospitals train each round."""
        per_round = self.sampling.clients_per_round
        if per_round == "all":
            return self.num_hospitals()
        if isinstance(per_round, float):
            return max(1, round(per_round * self.num_hospitals()))
        return per_round

    def num_workers(self) -> int:
        return self.num_hospitals() if self.engine.workers == "per_hospital" else self.engine.workers

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----- loading ------------------------------------------------------------------------------
_UNION_TAGS = {"source": "kind", "partition": "scheme", "strategy": "name"}


def _field_path(loc: tuple[Any, ...]) -> str:
    """Dotted path of a pydantic error location, without union tags and validator names."""
    parts: list[str] = []
    for i, item in enumerate(loc):
        if i > 0 and loc[i - 1] in _UNION_TAGS and i < len(loc) - 1:
            continue  # the tag pydantic inserts after a discriminated-union field
        parts.append(str(item))
    return ".".join(parts)


def one_line_error(error: ValidationError) -> str:
    """The first validation problem as `field.path: what was expected (got ...)`."""
    first = error.errors()[0]
    path = _field_path(first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    if first["type"] == "missing":
        return f"{path}: required field is missing"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":  # our own validators already say what they got
        return message if not path or message.startswith(f"{path}:") else f"{path}: {message}"
    shown = first.get("input")
    got = "" if isinstance(shown, dict) else f" (got {shown!r})"
    return f"{path}: {message}{got}" if path else f"{message}{got}"


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a plain dict (as read from YAML) into a Config, or raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(one_line_error(error)) from None


def merge_settings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` onto `base`. A union section whose tag changes (say a new partition
    scheme) is replaced whole, so the old scheme's keys do not leak into the new one; a union
    section given as a bare string is its tag (`strategy: fedbn`)."""
    merged = dict(base)
    for key, value in update.items():
        if key in _UNION_TAGS and isinstance(value, str):
            value = {_UNION_TAGS[key]: value}  # shorthand: `strategy: fedbn`
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            tag = _UNION_TAGS.get(key)
            switched = tag is not None and tag in value and value[tag] != old.get(tag)
            merged[key] = dict(value) if switched else merge_settings(old, value)
        else:
            merged[key] = value
    return merged


def override_settings(assignment: str) -> dict[str, Any]:
    """Turn one `--set a.b.c=value` (value parsed as YAML) into a nested dict."""
    key, sep, text = assignment.partition("=")
    if not sep or not key or "" in key.split("."):
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE, e.g. data.hospitals=50")
    try:
        value: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config onto the embedded defaults, apply --set overrides, validate."""
    raw = Config().to_dict()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            from_file = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML") from None
        if not isinstance(from_file, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        raw = merge_settings(raw, from_file)
    for assignment in overrides:
        raw = merge_settings(raw, override_settings(assignment))
    return parse_config(raw)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
