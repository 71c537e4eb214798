"""Every shipped experiment config loads, the shared-data files it names exist where the README
says the shared folder is (a wrong `../` once sent a documented command to a missing file), and
its partition can be drawn for the seeds the documented commands run (0, 1, 2: a Dirichlet
min_samples once failed on seed 2 of a shipped config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED_DATA
from fedsim.config import load_config
from fedsim.data.federation import build_federation
from fedsim.errors import ConfigError
from fedsim.yamlio import load_yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_loads_and_names_existing_shared_data(path: Path) -> None:
    weights = (load_yaml(path.read_text()).get("model") or {}).get("weights")
    try:
        source = load_config(path).data.source
    except ConfigError as error:
        if weights is not None and str(error).startswith("model.weights:"):
            pytest.skip(f"{path.name} needs the pretrained weights file the user downloads ({weights}): {error}")
        raise
    named = getattr(source, "path", None) or getattr(source, "root", None)
    if named is None or "shared" not in Path(named).parts:
        return
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent on this machine")
    assert Path(named).resolve().parent == SHARED_DATA.resolve(), f"{path.name} reads {named}, outside {SHARED_DATA}"
    assert Path(named).exists(), f"{path.name} names {named}, which does not exist"


DOCUMENTED_SEEDS = (0, 1, 2)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_partition_draws_for_the_documented_seeds(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as error:
        pytest.skip(f"{path.name} does not load here: {error}")
    if config.task != "classification":
        return
    named = getattr(config.data.source, "path", None) or getattr(config.data.source, "root", None)
    if named is not None and not Path(named).exists():
        pytest.skip(f"{path.name} reads {named}, absent on this machine")
    for seed in DOCUMENTED_SEEDS:
        federation = build_federation(config.data, seed)  # raises DataError where no draw fits
        assert len(federation.train_parts) == config.data.hospitals, f"{path.name}, seed {seed}"
