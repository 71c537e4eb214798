"""fedsim as a library: the README's snippets run as written, and `fedsim.run` takes every kind
of config and raises typed one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import fedsim

README = Path(__file__).resolve().parents[1] / "README.md"


def _library_snippets() -> list[str]:
    text = README.read_text()
    section = text.split("## fedsim as a Python library", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_the_four_library_snippets() -> None:
    snippets = _library_snippets()
    assert len(snippets) == 4
    assert [s for s in snippets if "register_model" in s] and [s for s in snippets if "dataset_from_arrays" in s]
    assert [s for s in snippets if "StrategyConfig" in s]


@pytest.mark.ray
@pytest.mark.parametrize("index", range(4))
def test_readme_library_snippet_runs(index: int, tmp_path: Path) -> None:
    """Each snippet as a user runs it: a script of its own, on a local Ray cluster it starts."""
    script = tmp_path / "snippet.py"
    script.write_text(_library_snippets()[index])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "runs").iterdir())  # out=None: a fresh run directory under ./runs


def test_run_takes_a_dict_a_path_or_a_config_and_returns_dataframes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = {"rounds": 1, "engine": {"backend": "in_process"}, "data": {"hospitals": 4, "source": {
        "kind": "synthetic", "classes": 2, "train_samples": 200, "test_samples": 40}}, "train": {"epochs": 1}}
    from_dict = fedsim.run(settings, tmp_path / "dict")
    path = tmp_path / "config.yaml"
    path.write_text((tmp_path / "dict" / "config.yaml").read_text())
    from_path = fedsim.run(path, tmp_path / "path")
    from_config = fedsim.run(fedsim.load_config(path))
    assert from_config.run_dir.parent == Path("runs") and from_config.run_dir.name.startswith("fedavg-classification-")
    for result in (from_dict, from_path, from_config):
        assert isinstance(result.rounds, pd.DataFrame) and list(result.rounds["round"]) == [1]
        assert len(result.hospital_eval) == 4 and len(result.partition) == 4
    pd.testing.assert_frame_equal(from_dict.clients.drop(columns="seconds"), from_path.clients.drop(columns="seconds"))
    model = from_dict.model()
    state = torch.load(from_dict.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_mistakes_raise_typed_one_line_errors_without_cli_wording(tmp_path: Path) -> None:
    with pytest.raises(fedsim.ConfigError, match=r"^strategy.mu: .*greater than or equal to 0") as error:
        fedsim.run({"strategy": {"name": "fedprox", "mu": -1}})
    assert "\n" not in str(error.value)
    with pytest.raises(fedsim.ConfigError, match="model.name: unknown model 'nope'"):
        fedsim.run({"model": {"name": "nope"}}, tmp_path / "a")
    with pytest.raises(fedsim.ConfigError, match="data.source.kind: custom data is passed in Python"):
        fedsim.run({"data": {"source": {"kind": "custom"}}}, tmp_path / "b")
    with pytest.raises(fedsim.DataError, match="train images: expected floats in"):
        fedsim.dataset_from_arrays(train=(2 * torch.ones(3, 8, 8).numpy(), [0, 1, 0]), test=(torch.ones(1, 8, 8).numpy(), [0]))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(fedsim.ConfigError) as taken:
        fedsim.run({"rounds": 1}, tmp_path / "taken")
    assert "already holds a run" in str(taken.value) and "--out" not in str(taken.value)
    assert issubclass(fedsim.ConfigError, fedsim.FedsimError) and issubclass(fedsim.DataError, fedsim.FedsimError)
