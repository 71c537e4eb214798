"""Tasks by name: what the driver, the config schema, reports, comparisons and sweeps need to know
of a task without importing it (its implementation imports torch; the server actor must not).

A task is a `Task` implementation (fedsim.tasks.base) plus a `TaskSpec` registered in a module of
fedsim.tasks.specs. The spec owns everything specific to the task outside the engine: its config
section, what it offers strategies, its report, comparison and plot metrics, and how sweeps set
its federation size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from fedsim.registry import Registry
from fedsim.schema import Strict

if TYPE_CHECKING:
    from fedsim.config import Config
    from fedsim.tasks.base import Task


@dataclass(frozen=True)
class TaskSpec:
    name: str
    #: Build the task for a run (data loaded, environments drawn); `dataset`: a user's own data.
    build: Callable[["Config", Any], "Task"]
    #: fedsim.protocol capabilities the task offers strategies and update stages.
    capabilities: frozenset[str]
    #: The federation's size under `config`, and the dotted config key that sets it.
    num_hospitals: Callable[["Config"], int]
    hospitals_key: str
    #: What the hospitals do, in a few words (report headers).
    describe: Callable[["Config"], str]
    #: The comparison table: the results table it reads and its (column, heading) pairs.
    compare_table: str
    compare_columns: tuple[tuple[str, str], ...]
    #: The rounds column that ranks rounds (the Task's headline_metric) and its direction.
    headline: str = "global_accuracy"
    higher_is_better: bool = True
    #: The global columns a report shows first, in order, with their (short) headings; the
    #: other global columns follow, headed by their names, while the table fits a terminal.
    report_columns: tuple[tuple[str, str], ...] = ()
    #: Metric column -> a reader's label, for tables and plots.
    labels: dict[str, str] = field(default_factory=dict)
    #: The task's own config section (e.g. "scheduling") and its model, if it has one.
    section: str | None = None
    section_model: type[Strict] | None = None
    #: Task-specific cross-checks of a config (raise ValueError naming the field).
    check: Callable[["Config"], None] = lambda config: None
    #: Sweep axes that change the task's heterogeneity: axis -> (value -> settings to merge).
    heterogeneity_axes: dict[str, Callable[[float], dict[str, Any]]] = field(default_factory=dict)

    def label(self, column: str) -> str:
        """A reader's name for a results column (the task's own, else the column's words)."""
        if column in self.labels:
            return self.labels[column]
        words = column.removeprefix("global_").removeprefix("hospital_").replace("_", " ")
        return f"{words.removesuffix(' worst10')} (worst 10% of hospitals)" if column.endswith("_worst10") else words


TASKS: Registry[TaskSpec] = Registry("task", "fedsim.tasks.specs")


def register_task(spec: TaskSpec) -> TaskSpec:
    TASKS.register(spec.name, spec)
    return spec


def task_spec(name: str) -> TaskSpec:
    spec = TASKS.get(name)
    if spec is None:
        raise ValueError(f"task: unknown task {name!r}; expected one of {', '.join(TASKS.names())}")
    return spec
