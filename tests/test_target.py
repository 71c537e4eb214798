"""Time to target (fedsim.target): parsing, the first round that meets it, the simulated hours,
and the report / compare lines."""

from __future__ import annotations

import math

import pytest

from fedsim.cli import main
from fedsim.config import load_config
from fedsim.errors import ConfigError
from fedsim.simulation import Simulation
from fedsim.target import Reached, Target, describe, parse_target, time_to_target

ROWS = [  # out of order on purpose
    {"round": 3, "global_balanced_accuracy": 0.82, "sim_clock": 3 * 7200.0},
    {"round": 1, "global_balanced_accuracy": 0.50, "sim_clock": 7200.0},
    {"round": 2, "global_balanced_accuracy": float("nan"), "sim_clock": 2 * 7200.0},
    {"round": 4, "global_balanced_accuracy": 0.79, "sim_clock": 4 * 7200.0},
]


def test_targets_parse_with_their_direction() -> None:
    assert parse_target("global_balanced_accuracy=0.8") == Target("global_balanced_accuracy", 0.8, False)
    assert parse_target("global_acuity_weighted_wait<=2.5") == Target("global_acuity_weighted_wait", 2.5, True)
    for bad in ("accuracy", "accuracy=high", "=0.8"):
        with pytest.raises(ConfigError, match="--target"):
            parse_target(bad)


def test_the_first_round_meeting_the_target_and_its_simulated_hours() -> None:
    assert time_to_target(ROWS, parse_target("global_balanced_accuracy>=0.8")) == Reached(3, 6.0)
    assert time_to_target(ROWS, parse_target("global_balanced_accuracy=0.9")) is None
    assert time_to_target(ROWS, parse_target("global_balanced_accuracy<=0.6")) == Reached(1, 2.0)
    no_clock = [{k: v for k, v in row.items() if k != "sim_clock"} for row in ROWS]
    assert math.isnan(time_to_target(no_clock, parse_target("global_balanced_accuracy=0.8")).sim_hours)
    assert describe(parse_target("global_balanced_accuracy=0.8"), Reached(3, 6.0), 4) == \
        "target global_balanced_accuracy >= 0.8: reached at round 3, 6 simulated hours"
    assert describe(parse_target("global_balanced_accuracy=0.9"), None, 4) == "target global_balanced_accuracy >= 0.9: not reached in 4 rounds"
    with pytest.raises(ConfigError, match="no column global_auc"):
        time_to_target(ROWS, parse_target("global_auc=0.8"))


def test_report_prints_the_time_to_target(tmp_path, capsys) -> None:
    settings = ["data.source={kind: synthetic, classes: 3, train_samples: 300, test_samples: 90}", "data.hospitals=4",
                "train.epochs=1", "rounds=2", "engine.backend=in_process", "engine.workers=1", "systems={}"]
    Simulation(load_config(None, settings), tmp_path / "run", quiet=True).run()
    assert main(["report", str(tmp_path / "run"), "--target", "global_accuracy>=0", "--target", "global_accuracy=1.01"]) == 0
    out = capsys.readouterr().out
    reached = [line for line in out.splitlines() if line.startswith("target global_accuracy >= 0:")]
    assert len(reached) == 1 and "reached at round 1," in reached[0] and "simulated hours" in reached[0]
    assert "target global_accuracy >= 1.01: not reached in 2 rounds" in out
    assert main(["report", str(tmp_path / "run"), "--target", "nonsense"]) == 2
    assert "--target nonsense: expected METRIC=VALUE" in capsys.readouterr().err
