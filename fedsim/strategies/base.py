"""The Strategy interface: what each sampled hospital is told, and how updates combine.

A strategy is plain Python, testable without Ray. The engine calls `configure` and `aggregate`
on the server, and `contribution` on the workers (a pure function of its arguments: the worker's
copy of the strategy never sees server state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import numpy as np

from fedsim.params import Params
from fedsim.protocol import Aggregate, Instruction, LocalResult


class Strategy(ABC):
    name: ClassVar[str]
    #: True when contributions can be summed on workers (the server then gets one exact total).
    aggregates_on_workers: ClassVar[bool] = True

    @abstractmethod
    def configure(self, round_index: int, hospitals: Sequence[int], sizes: np.ndarray) -> list[Instruction]:
        """Instructions for the sampled `hospitals` (sorted ids) with `sizes` training samples each."""

    @abstractmethod
    def contribution(self, result: LocalResult, instruction: Instruction, global_params: Params) -> dict[str, np.ndarray]:
        """The hospital's already-weighted share of the aggregate (summed exactly by the engine)."""

    @abstractmethod
    def aggregate(self, round_index: int, global_params: Params, aggregate: Aggregate) -> tuple[Params, dict[str, float]]:
        """The next global model, and round-level quantities to log in rounds.parquet."""
