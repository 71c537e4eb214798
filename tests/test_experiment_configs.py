"""Every shipped experiment config loads, and the shared-data files it names exist where the
README says the shared folder is (a wrong `../` once sent a documented command to a missing file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED_DATA
from fedsim.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_loads_and_names_existing_shared_data(path: Path) -> None:
    source = load_config(path).data.source
    named = getattr(source, "path", None) or getattr(source, "root", None)
    if named is None or "shared" not in Path(named).parts:
        return
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent on this machine")
    assert Path(named).resolve().parent == SHARED_DATA.resolve(), f"{path.name} reads {named}, outside {SHARED_DATA}"
    assert Path(named).exists(), f"{path.name} names {named}, which does not exist"
