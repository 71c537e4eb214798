"""How many worker actors a machine or cluster can hold, checked before any actor starts.

Each worker is a Python process holding torch and the task (about 0.6 GB measured on the
quickstart). Asking a 2-core, 24 GB machine for 1000 workers used to start hundreds of them and
exhaust its memory; now the request is refused in one line, from the memory actually available
(psutil locally, Ray's `memory` resource on a remote cluster). More workers than cores only
share the cores (slower, same results), so that gets a one-line warning instead.
"""

from __future__ import annotations

import os
import sys

import psutil

from fedsim.errors import ClusterError

#: Resident memory one worker process needs (torch + task + a round's tensors), a measured estimate.
WORKER_BYTES = 600 * 2**20


def check_memory(num_workers: int, available_bytes: float, where: str) -> None:
    """Refuse `num_workers` workers when they cannot fit in `available_bytes`."""
    needed = num_workers * WORKER_BYTES
    if needed > available_bytes:
        fits = max(0, int(available_bytes // WORKER_BYTES))
        raise ClusterError(
            f"engine.workers: {num_workers} workers need about {needed / 2**30:.1f} GB "
            f"({WORKER_BYTES / 2**30:.1f} GB each) but {where} has {available_bytes / 2**30:.1f} GB available; "
            f"use at most {fits} workers"
        )


def check_local_capacity(num_workers: int, num_cpus: float, driver_cpus: float = 0.0) -> None:
    """Before starting a local Ray cluster: refuse workers this machine's memory cannot hold, warn
    when they outnumber its cores."""
    check_memory(num_workers, psutil.virtual_memory().available, "this machine")
    cores = os.cpu_count() or 1
    wanted = driver_cpus + num_workers * num_cpus
    if wanted > cores:
        print(
            f"fedsim: warning: engine.workers: {num_workers} workers x {num_cpus:g} CPU on {cores} cores: "
            "they share the cores (slower, same results)",
            file=sys.stderr,
        )
