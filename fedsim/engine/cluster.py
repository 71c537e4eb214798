"""Connecting to Ray: an in-process local cluster by default, an existing one via RAY_ADDRESS."""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from typing import Iterator

import ray

from fedsim.config import EngineConfig
from fedsim.engine.capacity import check_local_capacity, check_memory
from fedsim.errors import ClusterError

__all__ = ["ClusterError", "check_resources", "quiet_ray_notices", "ray_session"]

#: Ray's logger for its token-authentication notice ("Token authentication is enabled ..."),
#: printed by every ray.init. fedsim keeps authentication on and raises only this logger's
#: threshold, so the notice goes and its errors stay.
_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_ray_notices() -> None:
    """Hide Ray's per-start authentication notice (warnings only; authentication stays on)."""
    logging.getLogger(_AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)


def check_resources(engine: EngineConfig, num_workers: int, driver_cpus: float = 0.0) -> None:
    """Fail fast where Ray would leave actors pending forever (e.g. GPUs on a GPU-less cluster);
    `driver_cpus`: CPUs a sweep trial reserves for its own driver besides the workers."""
    total = ray.cluster_resources()
    gpus_needed = num_workers * engine.num_gpus
    if gpus_needed > 0 and total.get("GPU", 0) == 0:
        raise ClusterError(
            f"engine.num_gpus: each worker asks for {engine.num_gpus} GPU but the Ray cluster has no GPUs; "
            "set engine.num_gpus: 0 or submit to a cluster with GPU nodes"
        )
    if gpus_needed > total.get("GPU", 0) + 1e-9:
        raise ClusterError(
            f"engine.num_gpus: {num_workers} workers x {engine.num_gpus} GPU = {gpus_needed:g} GPUs, "
            f"but the cluster has {total.get('GPU', 0):g}; lower engine.workers or engine.num_gpus"
        )
    if "memory" in total:
        check_memory(num_workers, total["memory"], "the Ray cluster")
    cpus_needed = driver_cpus + num_workers * engine.num_cpus
    if cpus_needed > total.get("CPU", 0) + 1e-9:
        driver = f"{driver_cpus:g} for the driver + " if driver_cpus else ""
        raise ClusterError(
            f"engine.num_cpus: {driver}{num_workers} workers x {engine.num_cpus} CPU = {cpus_needed:g} CPUs, "
            f"but the cluster has {total.get('CPU', 0):g}; lower engine.workers or engine.num_cpus"
        )


@contextmanager
def ray_session(engine: EngineConfig, num_workers: int, driver_cpus: float = 0.0) -> Iterator[None]:
    """Use the running Ray, else join RAY_ADDRESS (as under `ray job submit`), else start a local
    cluster sized for the pool; shut down only what was started here."""
    started = False
    if not ray.is_initialized():
        quiet_ray_notices()
        if os.environ.get("RAY_ADDRESS"):
            ray.init(logging_level="WARNING")
        else:
            check_local_capacity(num_workers, engine.num_cpus, driver_cpus)
            cpus = max(os.cpu_count() or 1, math.ceil(driver_cpus + num_workers * engine.num_cpus))
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        started = True
    try:
        check_resources(engine, num_workers, driver_cpus)
        yield
    finally:
        if started:
            ray.shutdown()
