"""Shared fixtures: one in-process local Ray cluster for the whole test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU local Ray cluster, started once and shut down at the end of the session."""
    import ray

    import toy_task

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.cloudpickle.register_pickle_by_value(toy_task)  # workers cannot import the tests folder
    yield ray
    ray.shutdown()
