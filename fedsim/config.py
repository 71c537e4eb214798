"""Typed, validated run configuration.

Every run is described by one `Config`. Validation happens before Ray starts, so a typo costs
a one-line error (naming the field and what was expected), not a half-started cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from fedsim.errors import ConfigError
from fedsim.yamlio import load_yaml
from fedsim.pipeline.base import StageConfig
from fedsim.attacks import AttackConfig
from fedsim.privacy.secagg import SecureAggregationConfig
from fedsim.privacy.settings import CompressionConfig, PrivacyConfig, refuse_other_strategies
from fedsim.quarantine import QuarantineConfig
from fedsim.schema import Strict as _Strict
from fedsim.schema import one_line_error
from fedsim.strategies.base import StrategyConfig
from fedsim.systems.config import SystemsConfig, check_sampling
from fedsim.protocol import FINE_TUNING, HEAD_FIRST, PARTIAL_WORK, VECTORIZED_TRAINING
from fedsim.tasks.registry import TASKS, task_spec

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "one_line_error"]


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


class CustomSource(_Strict):
    """A user's own arrays or torch Dataset, passed in Python: `fedsim.run(config, dataset=...)`
    (see fedsim.data.custom); the run's config.yaml records its name."""

    kind: Literal["custom"]
    name: str = "custom"


Source = Annotated[
    Union[SyntheticSource, MedMNISTSource, ISIC2018Source, MessidorSource, CustomSource],
    Field(discriminator="kind"),
]


# ----- partitions ---------------------------------------------------------------------------
class IIDPartition(_Strict):
    scheme: Literal["iid"] = "iid"


class DirichletPartition(_Strict):
    """Label skew: each class spread over hospitals by Dir(alpha) proportions (Yurochkin et al.
    2019, as flwr-datasets' DirichletPartitioner; hospital sizes vary)."""

    scheme: Literal["dirichlet"]
    alpha: float = Field(gt=0)
    min_samples: int = Field(2, ge=1)


class DirichletEqualPartition(_Strict):
    """Label skew at equal hospital sizes: each hospital's class shares ~ Dir(alpha * prior)
    (Hsu et al. 2019)."""

    scheme: Literal["dirichlet_equal"]
    alpha: float = Field(gt=0)


class PathologicalPartition(_Strict):
    """Each hospital holds exactly `classes_per_hospital` classes (flwr-datasets'
    PathologicalPartitioner)."""

    scheme: Literal["pathological"]
    classes_per_hospital: int = Field(2, ge=1)
    assignment: Literal["random", "deterministic", "first-deterministic"] = "first-deterministic"


class ShardPartition(_Strict):
    """fedsim's shard split (its reading of the FedMRL paper): a class's shards stay with its home
    hospitals with probability eta (eta = 1: each hospital holds only its home classes)."""

    scheme: Literal["shards"]
    eta: float = Field(ge=0, le=1)
    shards_per_class: int = Field(10, ge=1)


class AuthorsShardPartition(_Strict):
    """The FedMRL authors' code's sampling: every hospital draws shards of every class; hospitals
    overlap (fedsim.data.fedmrl_shards)."""

    scheme: Literal["authors_shards"]
    eta: float = Field(1.0, ge=0, le=1)
    shards_per_class: int = Field(200, ge=1)
    samples_per_shard: int = Field(5, ge=1)


class QuantityPartition(_Strict):
    """Quantity skew: log-normal hospital sizes, labels IID within each hospital."""

    scheme: Literal["quantity"]
    sigma: float = Field(gt=0)
    min_samples: int = Field(2, ge=1)


Partition = Annotated[
    Union[IIDPartition, DirichletPartition, DirichletEqualPartition, PathologicalPartition, ShardPartition,
          AuthorsShardPartition, QuantityPartition],
    Field(discriminator="scheme"),
]


class DataConfig(_Strict):
    source: Source = SyntheticSource()
    hospitals: int = Field(20, ge=1)
    partition: Partition = DirichletPartition(scheme="dirichlet", alpha=0.5)
    local_test_fraction: float = Field(0.2, ge=0, lt=1)
    validation_fraction: float = Field(
        0.1, gt=0, lt=1,
        description="share of the training split held out (stratified, seeded) as validation where the source ships none",
    )
    scanner_shift: float = Field(0.0, ge=0, description="strength of per-hospital scanner-like feature shift; 0 = none")


# ----- learning -----------------------------------------------------------------------------
class ModelConfig(_Strict):
    """A registered model factory: built-in small_cnn and resnet18, or your own
    (`fedsim.register_model`). `weights`: a local state-dict file (e.g. torchvision's ImageNet
    DenseNet-121 for `densenet121`) loaded into the model before round 1; nothing is downloaded
    at run time. `freeze_backbone`: train only the classifier head (fedsim.models.pretrained)."""

    name: str = "small_cnn"
    weights: str | None = None
    freeze_backbone: bool = False

    @model_validator(mode="after")
    def _backbone(self) -> "ModelConfig":
        if self.freeze_backbone and self.weights is None:
            raise ValueError("model.freeze_backbone: needs model.weights (a frozen random backbone learns nothing)")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ValueError(f"model.weights: {self.weights} is not a file; expected a saved state dict (.pth)")
        return self


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


class SamplingConfig(_Strict):
    """Which hospitals train each round: "all", a count (int >= 1) or a fraction (float in (0, 1]).

    `scheme` "fixed" draws exactly that many uniformly without replacement; "proportional" draws
    that many without replacement with probabilities proportional to the hospitals' training
    samples; "available" draws uniformly among the hospitals online when the round starts (needs
    a `systems` section); "poisson" includes each hospital independently with probability
    clients_per_round / hospitals (seeded per round), the sampling the DP accountant's
    amplification analysis assumes. With a `systems` section, a sampled hospital that is offline
    when the round starts does not take part.
    """

    clients_per_round: Any = "all"
    scheme: Literal["fixed", "proportional", "available", "poisson"] = "fixed"

    @field_validator("clients_per_round")
    @classmethod
    def _count_or_fraction(cls, value: Any) -> Any:
        if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        if isinstance(value, float) and 0 < value <= 1:
            return value
        raise ValueError(f'expected "all", an integer >= 1 or a fraction in (0, 1], got {value!r}')


class EngineConfig(_Strict):
    """The worker pool: `workers` Ray actors, each pinned to num_cpus and num_gpus (a whole number
    of GPUs, or 1/k of one so that k workers share a GPU: 0.5, 0.25, ...).
    `backend: in_process` runs the same rounds in this process without Ray (debugging, tests):
    hospitals are still spread over `workers`, so results are bitwise those of a Ray run.
    `vectorized_hospitals: N` trains up to N of a worker's hospitals at once as one model vmapped
    over their stacked parameters (torch.func; for GPUs, slower on CPU; results match the
    one-at-a-time default to float32 rounding, see fedsim.tasks.vectorized)."""

    backend: Literal["ray", "in_process"] = "ray"
    workers: Any = 2
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    vectorized_hospitals: int = Field(0, ge=0, description="hospitals a worker trains at once with torch.func.vmap; 0 = one at a time")
    checkpoint_every: int = Field(1, ge=0, description="write a checkpoint after every N rounds (and the last); 0 = never")
    max_retries: int = Field(3, ge=0, description="replacements of a dead worker per call before the round fails")

    @field_validator("workers")
    @classmethod
    def _count_or_per_hospital(cls, value: Any) -> Any:
        if value == "per_hospital" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f'expected an integer >= 1 or "per_hospital", got {value!r}')

    @field_validator("num_gpus")
    @classmethod
    def _whole_or_shared_gpu(cls, value: float) -> float:
        if value == 0 or (value >= 1 and float(value).is_integer()):
            return value
        sharing = round(1 / value) if 0 < value < 1 else 0
        if sharing >= 2 and abs(sharing * value - 1) < 1e-3:  # 1/3 as 0.333 or 0.3333 is fine
            return value
        raise ValueError(f"expected 0, a whole number of GPUs or 1/k of one (0.5, 0.25, ...: k workers share a GPU), got {value!r}")


class EvalConfig(_Strict):
    """When the new global model is scored, and on which hospitals' own test splits: "all"
    registered hospitals, or only the round's "sampled" ones (keeps a round's cost proportional
    to the cohort when thousands of hospitals are registered)."""

    every: int = Field(1, ge=1, description="evaluate the global model every N rounds (and after the last)")
    every_seconds: float | None = Field(
        None, gt=0, description="asynchronous strategies: evaluate at the first server step at or past each multiple of this "
        "many simulated seconds (and after the last), instead of every N steps")
    hospitals: Literal["all", "sampled"] = "all"
    batch_size: int = Field(512, ge=1)
    personalise_steps: int = Field(
        0, ge=0, description="fine-tune a copy of each scored hospital's model for this many local steps on its own "
        "training data and score it too (personalised_* in hospital_eval.parquet); 0 = off"
    )


class TrackingConfig(_Strict):
    """Optional experiment tracking, beside the run directory's Parquet tables: TensorBoard
    event files in RUN_DIR/tensorboard (one scalar per rounds.parquet metric per round; needs
    tensorboardX) and an MLflow run (the config as params, the same metrics per round; needs
    mlflow, logging to its usual tracking URI, e.g. MLFLOW_TRACKING_URI or ./mlruns)."""

    tensorboard: bool = False
    mlflow: bool = False
    mlflow_experiment: str = "fedsim"


class Config(_Strict):
    """A run. `task` picks the workload: "classification" (images; the `data` and `model`
    sections) or "scheduling" (patient scheduling; its own `scheduling` section, which only that
    task accepts; `data` and `model` are then ignored, and of `train` only `epochs`,
    `epochs_mode` and `max_epochs` apply, counted in `scheduling.dqn.steps_per_epoch` environment
    steps). A task's own section is declared by its spec (fedsim.tasks.registry), not here.

    `strategy` and each `pipeline` stage are validated with the model registered under their name
    (fedsim.strategies, fedsim.pipeline), so a new one needs no change to this schema.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)  # extras: the task's own section

    seed: int = Field(0, ge=0, description="the run seed (a non-negative integer)")
    rounds: int = Field(15, ge=1)
    task: str = "classification"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    strategy: SerializeAsAny[StrategyConfig] = Field(default_factory=lambda: StrategyConfig.parse("fedavg", "strategy"))
    pipeline: tuple[SerializeAsAny[StageConfig], ...] = ()
    sampling: SamplingConfig = SamplingConfig()
    engine: EngineConfig = EngineConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    quarantine: QuarantineConfig = QuarantineConfig()
    attack: AttackConfig | None = None
    privacy: PrivacyConfig | None = None
    compression: CompressionConfig | None = None
    secure_aggregation: SecureAggregationConfig | None = None
    systems: SystemsConfig | None = None

    @field_validator("strategy", mode="before")
    @classmethod
    def _registered_strategy(cls, value: Any) -> Any:
        return StrategyConfig.parse(value, "strategy")

    @field_validator("pipeline", mode="before")
    @classmethod
    def _registered_stages(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"pipeline: expected a list of update stages, got {value!r}")
        return tuple(StageConfig.parse(stage, f"pipeline.{i}") for i, stage in enumerate(value))

    @model_validator(mode="before")
    @classmethod
    def _task_section(cls, raw: Any) -> Any:
        """Validate the task's own section (its defaults when absent); refuse any other extra key."""
        if not isinstance(raw, dict):
            return raw
        name = raw.get("task", "classification")
        if not isinstance(name, str):
            raise ValueError(f"task: expected a task name, got {name!r}")
        spec = task_spec(name)
        sections = {other.section: other.name for _, other in TASKS if other.section}
        raw = dict(raw)
        for key in [key for key in raw if key not in cls.model_fields]:
            if key not in sections:
                raise ValueError(f"{key}: unknown key")
            if sections[key] != name:
                if raw[key] is None:
                    del raw[key]
                    continue
                raise ValueError(f"{key}: only used when task is {sections[key]} (task is {name})")
        if spec.section is not None and spec.section_model is not None:
            section = raw.get(spec.section)
            if not isinstance(section, spec.section_model):
                try:
                    raw[spec.section] = spec.section_model.model_validate(section if section is not None else {})
                except ValidationError as error:
                    raise ValueError(f"{spec.section}.{one_line_error(error)}") from None
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        spec = self.task_spec()
        needed = [(f"strategy.name: {self.strategy.name}", self.strategy.requirements())] + [
            (f"pipeline.{i}.stage: {stage.stage}", stage.requirements()) for i, stage in enumerate(self.pipeline)
        ]
        if self.privacy is not None:
            needed.append((f"privacy.mechanism: {self.privacy.mechanism}", self.privacy.requirements()))
        if self.compression is not None:
            needed.append((f"compression.scheme: {self.compression.scheme}", self.compression.requirements()))
        if self.systems is not None and self.systems.stragglers == "partial":
            needed.append(("systems.stragglers: partial", {PARTIAL_WORK: "only the local steps that fit the deadline"}))
        if self.engine.vectorized_hospitals:
            needed.append(("engine.vectorized_hospitals", {VECTORIZED_TRAINING: "several hospitals of a worker trained as one model"}))
        if self.eval.personalise_steps:
            needed.append(("eval.personalise_steps", {FINE_TUNING: "it fine-tunes each scored hospital's model"}))
        for part, needs in needed:
            for capability, why in needs.items():
                if capability not in spec.capabilities:
                    raise ValueError(f"{part} needs {capability} ({why}), which task {self.task} does not offer")
        self.strategy.check(self)
        if self.eval.every_seconds is not None and not self.strategy.asynchronous:
            raise ValueError("eval.every_seconds: only for asynchronous strategies (fedbuff, fedasync), which have no rounds; "
                             "a synchronous run evaluates every eval.every rounds")
        if self.engine.vectorized_hospitals:
            self._check_vectorized()
        for section in (self.privacy, self.compression):
            if section is not None:
                section.check(self)
        check_sampling(self)
        if self.systems is not None:
            self.systems.check(self)
        if self.secure_aggregation is not None:
            refuse_other_strategies("secure_aggregation", self, "the server only learns the sum of fixed-weight contributions")
        spec.check(self)
        if self.attack is not None and self.attack.kind == "label_flip" and self.task != "classification":
            raise ValueError(f"attack.kind: label_flip flips class labels, which task {self.task} does not have")
        per_round = self.sampling.clients_per_round
        if isinstance(per_round, int) and per_round > self.num_hospitals():
            raise ValueError(
                f"sampling.clients_per_round: expected at most {spec.hospitals_key} ({self.num_hospitals()}), got {per_round}"
            )
        return self

    def _check_vectorized(self) -> None:
        """Refuse what the vmapped trainer (fedsim.tasks.vectorized) does not do per hospital."""
        unsupported = (
            (self.privacy is not None and self.privacy.mechanism == "dp_sgd",
             "DP-SGD clips per-sample gradients through Opacus' hooks, which a vmapped model does not run"),
            (self.compression is not None and self.compression.scheme == "federated_dropout",
             "federated dropout trains a different sub-network per hospital, which the vmapped trainer does not mask"),
            (self.systems is not None and self.systems.stragglers == "partial",
             "partial work stops each hospital after its own step budget, which the vmapped trainer does not"),
            (HEAD_FIRST in self.strategy.requirements(),
             f"strategy {self.strategy.name} trains the head and then the body, which the vmapped trainer does not"),
        )
        for applies, why in unsupported:
            if applies:
                raise ValueError(f"engine.vectorized_hospitals: {why}; set engine.vectorized_hospitals: 0")

    def task_spec(self) -> Any:
        """The TaskSpec of `task` (fedsim.tasks.registry)."""
        return task_spec(self.task)

    def num_hospitals(self) -> int:
        """The federation's size (data.hospitals, or scheduling.hospitals for the scheduling task)."""
        return self.task_spec().num_hospitals(self)

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
        value: Any = load_yaml(text)
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
            from_file = load_yaml(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML") from None
        if from_file is None:
            print(f"fedsim: {path} is empty; using the default settings", file=sys.stderr)
            from_file = {}
        if not isinstance(from_file, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        raw = merge_settings(raw, resolve_data_paths(from_file, path.parent))
    for assignment in overrides:
        raw = merge_settings(raw, resolve_data_paths(override_settings(assignment), Path.cwd()))
    return parse_config(raw)


#: The data source's file and folder settings (data.source.path, data.source.root).
_SOURCE_PATHS = ("path", "root")


def resolve_data_paths(settings: dict[str, Any], base: Path) -> dict[str, Any]:
    """`settings` with a relative data.source path or root, or model.weights file, made absolute
    against `base`: the config file's folder for a file's settings, the working directory for
    --set. The run's config.yaml then records the absolute path it read, wherever it is run from."""
    model = settings.get("model")
    if isinstance(model, dict) and isinstance(model.get("weights"), str):
        settings = {**settings, "model": {**model, "weights": str((base / model["weights"]).resolve())}}
    source = settings.get("data", {}).get("source") if isinstance(settings.get("data"), dict) else None
    if not isinstance(source, dict):
        return settings
    resolved = {
        key: str((base / value).resolve()) if key in _SOURCE_PATHS and isinstance(value, str) else value
        for key, value in source.items()
    }
    return {**settings, "data": {**settings["data"], "source": resolved}}


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
