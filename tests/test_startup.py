"""Start-up cost: every Ray worker imports the engine and the task, so what they import is paid
once per worker process before round 1. Heavy libraries that only some runs use (torchvision's
architectures pull in torch._dynamo, Opacus pulls in scipy, pandas reads result tables) must be
imported where they are used, not at module level."""

from __future__ import annotations

import subprocess
import sys

#: Seconds each on a small CPU, and needed by some runs only.
HEAVY = ("torchvision", "opacus", "scipy", "sklearn", "ray.rllib")
#: Lighter, but no worker needs them (the driver writes Parquet through pandas anyway).
OPTIONAL = HEAVY + ("pandas", "minisom")


def _imported_after(statement: str, modules: tuple[str, ...] = OPTIONAL) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `statement`."""
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_a_worker_and_the_server_import_no_optional_library() -> None:
    assert _imported_after("import fedsim.engine.worker, fedsim.tasks.classification, fedsim.engine.server") == []


def test_building_a_run_without_privacy_imports_no_optional_library(tmp_path) -> None:
    build = (
        "from fedsim.config import load_config\n"
        "from fedsim.simulation import Simulation\n"
        "import fedsim.cli\n"
        f"Simulation(load_config(None, ['data.hospitals=4', 'strategy=fedavg']), {str(tmp_path / 'run')!r}, quiet=True)"
    )
    assert not set(_imported_after(build)) & set(HEAVY)


def test_a_hospitals_local_training_does_not_import_torch_dynamo() -> None:
    """torch.optim's Optimizer class imports torch._dynamo on first use (seconds of each worker's
    first round); local SGD steps without it (fedsim.tasks.local_optim)."""
    train = (
        "from fedsim.config import load_config\n"
        "from fedsim.protocol import LocalPlan\n"
        "from fedsim.tasks.factory import build_task\n"
        "task = build_task(load_config(None, ['data.hospitals=2', 'train.momentum=0.9']))\n"
        "task.warm_up()\n"
        "task.train(0, task.initial_params(0), LocalPlan(epochs=1), None, 0)\n"
        "task.fine_tune(0, task.initial_params(0), 2, None, 0)"
    )
    assert _imported_after(train, ("torch._dynamo",)) == []


def test_a_hospitals_dqn_training_does_not_import_torch_dynamo() -> None:
    """The scheduling DQN's Adam steps without the Optimizer class too (fedsim.tasks.local_optim)."""
    train = (
        "from fedsim.config import load_config\n"
        "from fedsim.protocol import LocalPlan\n"
        "from fedsim.tasks.factory import build_task\n"
        "task = build_task(load_config(None, ['task=scheduling', 'scheduling.hospitals=2', 'scheduling.env.episode_hours=4',\n"
        "    'scheduling.dqn={steps_per_epoch: 40, learning_starts: 10, batch_size: 8, buffer_size: 50}']))\n"
        "result = task.train(0, task.initial_params(0), LocalPlan(epochs=1), None, 0)\n"
        "assert result.steps > 0"
    )
    assert _imported_after(train, ("torch._dynamo",)) == []


def test_the_optional_libraries_still_load_where_they_are_used() -> None:
    imported = _imported_after(
        "from fedsim.models import model_factory; model_factory('resnet18')(1, 2)\n"
        "from fedsim.privacy.ledger import PrivacyLedger\n"
        "import fedsim; fedsim.RunResult"
    )
    assert {"torchvision", "opacus"} <= set(imported)
