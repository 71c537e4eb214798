"""A pretrained backbone from a local weights file: loaded exactly, frozen when asked, refused in
one line when the file is absent, unreadable or of another architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.config import ConfigError, load_config
from fedsim.models import SmallCNN, small_input_resnet18
from fedsim.protocol import LocalPlan
from fedsim.tasks.factory import build_task

DATA = ["data.source={kind: synthetic, classes: 2, train_samples: 120, test_samples: 20}", "data.hospitals=2"]


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    path = tmp_path / "rgb_5_classes.pth"
    torch.save(SmallCNN(3, 5).state_dict(), path)  # another channel and class count than the run's
    return path


def test_weights_load_into_the_backbone_and_a_frozen_backbone_does_not_move(weights: Path) -> None:
    config = load_config(None, DATA + [f"model={{name: small_cnn, weights: {weights}, freeze_backbone: true}}"])
    task = build_task(config)
    saved = torch.load(weights, weights_only=True)
    start = task.initial_params(0)
    np.testing.assert_array_equal(start["model.features.0.weight"], saved["features.0.weight"].sum(dim=1, keepdim=True).numpy())
    np.testing.assert_array_equal(start["model.features.4.weight"], saved["features.4.weight"].numpy())
    np.testing.assert_array_equal(start["model.features.1.running_mean"], saved["features.1.running_mean"].numpy())
    assert start["model.head.3.weight"].shape == (2, 32)  # the 2-class head starts fresh
    trained = task.train(0, start, LocalPlan(epochs=1), None, seed=0).params
    moved = {name for name in start if not np.array_equal(start[name], trained[name])}
    assert moved == {"model.head.3.weight", "model.head.3.bias"}  # BN statistics stay too


def test_an_unfrozen_backbone_trains_from_the_weights(weights: Path) -> None:
    task = build_task(load_config(None, DATA + [f"model={{name: small_cnn, weights: {weights}}}"]))
    start = task.initial_params(0)
    trained = task.train(0, start, LocalPlan(epochs=1), None, seed=0).params
    assert not np.array_equal(start["features.4.weight"], trained["features.4.weight"])


def test_bad_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.weights: .* is not a file"):
        load_config(None, DATA + [f"model={{name: small_cnn, weights: {tmp_path / 'absent.pth'}}}"])
    with pytest.raises(ConfigError, match="model.freeze_backbone: needs model.weights"):
        load_config(None, DATA + ["model={name: small_cnn, freeze_backbone: true}"])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(ConfigError, match="could not be read as a state dict"):
        build_task(load_config(None, DATA + [f"model={{name: small_cnn, weights: {garbage}}}"]))
    other = tmp_path / "resnet.pth"
    torch.save(small_input_resnet18(1, 2).state_dict(), other)
    with pytest.raises(ConfigError, match="does not fit this model") as error:
        build_task(load_config(None, DATA + [f"model={{name: small_cnn, weights: {other}}}"])).initial_params(0)
    assert "\n" not in str(error.value)


def test_a_relative_weights_path_is_read_against_the_config_file(tmp_path: Path, weights: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text(f"model: {{name: small_cnn, weights: {weights.name}}}\n")
    assert load_config(config_file, DATA).model.weights == str(weights.resolve())
