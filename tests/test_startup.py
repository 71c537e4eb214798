"""Start-up cost: every Ray worker imports the engine and the task, so what they import is paid
once per worker process before round 1. Heavy libraries that only some runs use (torchvision's
architectures pull in torch._dynamo, Opacus pulls in scipy, pandas reads result tables) must be
imported where they are used, not at module level."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ("torchvision", "opacus", "scipy", "pandas", "sklearn", "ray.rllib", "minisom")


def _imported_after(statement: str) -> list[str]:
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_a_worker_and_the_server_import_no_optional_library() -> None:
    assert _imported_after("import fedsim.engine.worker, fedsim.tasks.classification, fedsim.engine.server") == []


def test_the_driver_of_a_run_without_privacy_imports_no_optional_library() -> None:
    assert _imported_after("import fedsim.cli, fedsim.simulation, fedsim.strategies.fedavg") == []


def test_the_optional_libraries_still_load_where_they_are_used() -> None:
    imported = _imported_after(
        "from fedsim.models import model_factory; model_factory('resnet18')(1, 2)\n"
        "from fedsim.privacy.ledger import PrivacyLedger\n"
        "import fedsim; fedsim.RunResult"
    )
    assert {"torchvision", "opacus"} <= set(imported)
