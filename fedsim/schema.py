"""The building blocks of fedsim's config schema: strict models, sections chosen by a registered
name (a strategy, an update stage), and the one-line error format.

A registered section is a `Pluggable` subclass whose tag field (`name`, `stage`) has a default:
defining the class registers it, so `strategy: {name: fedavgm, ...}` validates with FedAvgM's own
model, wherever that class lives (a fedsim module or user code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from fedsim.errors import ConfigError
from fedsim.registry import Registry

if TYPE_CHECKING:
    from fedsim.config import Config
    from fedsim.tasks.base import Task


class Strict(BaseModel):
    """No unknown keys, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Pluggable(Strict):
    """A config section picked by name from a registry (see the module docstring): the settings
    of one plug-in, which `build` turns into the working object for a run."""

    registry: ClassVar[Registry[type["Pluggable"]]]
    tag: ClassVar[str]

    def build(self, config: "Config", task: "Task") -> Any:
        """The plug-in for a run of `config` on `task`."""
        raise NotImplementedError(f"{self.registry.kind} {getattr(self, self.tag)}: its config must define build()")

    def requirements(self) -> Mapping[str, str]:
        """What the plug-in needs of the task (fedsim.protocol capabilities), each with why."""
        return {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get(cls.tag)
        if field is not None and isinstance(field.default, str):
            cls.registry.register(field.default, cls)

    @classmethod
    def parse(cls, value: Any, path: str) -> "Pluggable":
        """Validate `value` (a mapping with the tag, a bare tag string, or an instance) with the
        registered model its tag names; errors are one line starting with `path`."""
        if isinstance(value, Pluggable):
            return value
        if isinstance(value, str):
            value = {cls.tag: value}
        if not isinstance(value, dict) or not isinstance(value.get(cls.tag), str):
            raise ValueError(f"{path}: expected a {cls.registry.kind} name or a mapping with `{cls.tag}`, got {value!r}")
        model = cls.registry.get(value[cls.tag])
        if model is None:
            known = ", ".join(cls.registry.names())
            raise ValueError(f"{path}.{cls.tag}: unknown {cls.registry.kind} {value[cls.tag]!r}; expected one of {known}")
        try:
            return model.model_validate(value)
        except ValidationError as error:
            raise ValueError(f"{path}.{one_line_error(error)}") from None


#: Discriminated-union fields of the schema: pydantic puts the chosen tag into an error's location
#: right after them (data.source.medmnist.path), which the one-line message leaves out.
UNION_FIELDS = frozenset({"source", "partition"})


def _field_path(loc: tuple[Any, ...]) -> str:
    """Dotted path of a pydantic error location, without union tags."""
    parts = [str(item) for i, item in enumerate(loc) if not (0 < i < len(loc) - 1 and loc[i - 1] in UNION_FIELDS)]
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
        named = not path or message.startswith((f"{path}:", f"{path}."))
        return message if named else f"{path}: {message}"
    shown = first.get("input")
    got = "" if isinstance(shown, dict) else f" (got {shown!r})"
    return f"{path}: {message}{got}" if path else f"{message}{got}"


def validated(model: type[BaseModel], raw: Any) -> BaseModel:
    """`model` validated from `raw`, or ConfigError with the one-line message."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(one_line_error(error)) from None
