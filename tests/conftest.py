"""Shared fixtures: one in-process local Ray cluster for the whole test session.

Every test that starts Ray is marked `ray` here, so `pytest -m "not ray"` runs the quick rest:
the tests using a Ray-starting fixture, and the few that start Ray in a subprocess of their own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TESTS = Path(__file__).resolve().parent

#: Fixtures that start (or need) a Ray cluster: this file's `ray_cluster`, and the two-node
#: `ray start` cluster of test_cluster_job.py.
RAY_FIXTURES = frozenset({"ray_cluster", "local_cluster"})
#: Tests that start Ray without such a fixture, e.g. through `python -m fedsim.cli` in a subprocess:
#: (file in tests/, test function).
RAY_SUBPROCESS_TESTS = frozenset({
    ("test_simulation.py", "test_interrupted_run_keeps_every_finished_round"),
    ("test_workflow.py", "test_quiet_run_prints_exactly_the_run_directory"),
})


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU local Ray cluster, started once and shut down at the end of the session."""
    import ray

    import toy_task

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.cloudpickle.register_pickle_by_value(toy_task)  # workers cannot import the tests folder
    yield ray
    ray.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    for file, name in RAY_SUBPROCESS_TESTS:  # a renamed test would silently lose its mark
        path = TESTS / file
        if path.is_file() and not re.search(rf"^def {re.escape(name)}\(", path.read_text(), re.MULTILINE):
            raise pytest.UsageError(f"tests/conftest.py: RAY_SUBPROCESS_TESTS names {file}::{name}, which is gone")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))  # every fixture the test needs, transitively
        function = getattr(item, "originalname", item.name)  # without the [parameter] suffix
        if fixtures & RAY_FIXTURES or (item.path.name, function) in RAY_SUBPROCESS_TESTS:
            item.add_marker(pytest.mark.ray)
