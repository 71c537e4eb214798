"""Tasks travel to workers through Ray's object store; what each worker builds for itself must not."""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class WorkerLocalTorch:
    """Mixin for tasks that build torch modules lazily on each worker.

    The attributes named in `worker_local` are dropped when the task is pickled (every worker
    builds its own, on its own device) and the device travels as "cpu" until `use_device`.
    """

    worker_local: ClassVar[tuple[str, ...]]
    _device: torch.device

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update({name: None for name in self.worker_local}, _device="cpu")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._device = torch.device(state["_device"])
