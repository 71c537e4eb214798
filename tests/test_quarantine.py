"""Quarantine of bad updates (NaN/inf, or norm above a bound) and the per-element overflow guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import fedsim
from fedsim.cli import main
from fedsim.config import load_config
from fedsim.engine.fixed_point import FixedPointSum
from fedsim.pipeline.base import Pipeline
from fedsim.protocol import ClientReport
from fedsim.quarantine import QuarantineError, UpdateScreen, quarantine_notice
from fedsim.seeding import Stream, seed_for
from fedsim.strategies.fedavg import FedAvg
from fedsim.strategies.fednova import FedNova
from fedsim.strategies.scaffold import Scaffold
from in_process import SEED, one_round
from test_bad_input import TINY
from toy_task import ToyTask, full_cohort


class BrokenToyTask(ToyTask):
    """ToyTask whose chosen hospitals send NaN (`nan`) or jump far away (`far`)."""

    def __init__(self, broken: dict[int, str]) -> None:
        super().__init__()
        self.broken = broken

    def local_update(self, hospital: int, w: np.ndarray, seed: int, epochs: int = 1) -> np.ndarray:
        w = super().local_update(hospital, w, seed, epochs)
        fault = self.broken.get(hospital)
        return w * np.float32("nan") if fault == "nan" else w + 1e3 if fault == "far" else w


def test_fedavg_renormalises_over_the_kept_hospitals_by_hand() -> None:
    task = BrokenToyTask({2: "nan", 4: "far"})
    pipeline = Pipeline([], UpdateScreen(max_norm=100.0))
    for workers in (1, 3):
        broadcast, reports, states, _ = one_round(task, FedAvg(), full_cohort(task), workers=workers, pipeline=pipeline)
        kept = [0, 1, 3, 5]
        sizes = task.hospital_sizes().astype(np.float64)
        local = {h: task.local_update(h, np.zeros(5, np.float32), seed_for(SEED, Stream.LOCAL_TRAINING, 1, h)) for h in kept}
        expected = sum(sizes[h] * local[h].astype(np.float64) for h in kept) / sizes[kept].sum()
        np.testing.assert_allclose(broadcast["w"], expected, rtol=0, atol=1e-6)
        status = {report.hospital: report.status for report in reports}
        assert status[2] == "quarantined: non-finite values in w"
        assert status[4].startswith("quarantined: update norm ") and "above quarantine.max_norm 100" in status[4]
        assert all(status[h] == "ok" for h in kept)
        assert states[2].task is None and states[4].task is None and states[0].task == 1  # the round did not count
        if workers == 1:
            reference = broadcast["w"]
    assert np.array_equal(broadcast["w"], reference)  # bitwise the same on 1 and 3 workers


@pytest.mark.parametrize("make", [FedAvg, lambda: FedNova(momentum=0.5),
                                  lambda: Scaffold(local_lr=0.1, server_lr=1.0, num_hospitals=6)],
                         ids=["fedavg", "fednova", "scaffold"])
def test_a_quarantined_hospital_is_as_if_it_had_not_been_sampled(make) -> None:
    broken = BrokenToyTask({1: "nan"})
    with_broken, *_ = one_round(broken, make(), full_cohort(broken, epochs=[1, 2, 3, 1, 2, 3]))
    clean = ToyTask()
    without, *_ = one_round(clean, make(), full_cohort(clean, [0, 2, 3, 4, 5], epochs=[1, 3, 1, 2, 3]))
    assert with_broken.keys() == without.keys()
    for name in without:
        np.testing.assert_allclose(with_broken[name], without[name], rtol=1e-12, atol=1e-12)


def test_every_hospital_quarantined_keeps_the_model() -> None:
    task = BrokenToyTask({h: "nan" for h in range(6)})
    initial = task.initial_params(0)
    broadcast, reports, _, _ = one_round(task, FedAvg(), full_cohort(task))
    assert np.array_equal(broadcast["w"], initial["w"]) and all(r.status != "ok" for r in reports)


def test_run_names_quarantined_hospitals_in_clients_parquet_and_stderr(tmp_path: Path, capsys) -> None:
    fedsim.run(load_config(None, [*TINY, "quarantine.max_norm=1e-9"]), tmp_path / "run", quiet=True)
    clients = pq.read_table(tmp_path / "run" / "clients.parquet").to_pylist()
    assert {row["status"].split(" ")[0] for row in clients} == {"quarantined:"}
    assert "above quarantine.max_norm 1e-09" in clients[0]["status"]
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pylist()
    assert [row["quarantined"] for row in rounds] == [3, 3]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("fedsim: round 1: hospital 0 quarantined: update norm")
    assert lines[0].count("quarantined: update norm") == 3  # three hospitals, each named with its reason
    assert lines[0].endswith("; no update was kept, so the global model is unchanged this round")


def _reports(statuses: list[str]) -> list[ClientReport]:
    return [ClientReport(hospital=h, num_samples=1, steps=1, weight=1.0, seconds=0.0, upload_bytes=0, metrics={}, status=s) for h, s in enumerate(statuses)]


def test_a_rounds_quarantine_notice_is_one_line_however_many_hospitals_are_quarantined() -> None:
    bad = "quarantined: non-finite values in w"
    assert quarantine_notice(4, _reports(["ok"] * 5), "skip") is None
    few = quarantine_notice(4, _reports(["ok", bad, "ok"]), "skip")
    assert few == "fedsim: round 4: hospital 1 quarantined: non-finite values in w; left out of the aggregate"
    many = quarantine_notice(7, _reports(["ok"] + [bad] * 199), "skip")
    assert "\n" not in many and many.startswith("fedsim: round 7: 199 of 200 hospitals quarantined, e.g. hospital 1: non-finite values in w (all:")
    assert many.endswith("; left out of the aggregate")
    late = "late"  # the simulated clock's statuses (fedsim.systems.clock) are not quarantines
    assert quarantine_notice(7, _reports([late, bad]), "skip").endswith("no update was kept, so the global model is unchanged this round")
    assert quarantine_notice(7, _reports([late, "ok"]), "skip") is None


def test_fail_policy_stops_with_one_line(tmp_path: Path, capsys) -> None:
    code = main(["run", "--quiet", *[a for s in TINY for a in ("--set", s)], "--set", "quarantine.max_norm=1e-9",
                 "--set", "quarantine.policy=fail", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "round 1: hospital 0 quarantined" in err[0] and "policy is fail" in err[0]
    with pytest.raises(QuarantineError):
        fedsim.run(load_config(None, [*TINY, "quarantine.max_norm=1e-9", "quarantine.policy=fail"]), tmp_path / "again")
    assert not (tmp_path / "run" / "clients.parquet").exists()  # the failed round wrote nothing


def test_overflow_guard_is_per_element_and_names_hospital_and_parameter() -> None:
    total = FixedPointSum()
    total.add({f"layer{i}": np.full(3, 5e4) for i in range(100)}, "hospital 0")  # each element far below the limit
    assert total.value()["layer99"][0] == 5e4
    same_element = FixedPointSum()
    with pytest.raises(OverflowError, match=r"hospital (8[0-9]): parameter 'big' is too large .* summed over hospitals"):
        for hospital in range(100):
            same_element.add({"small": np.ones(2), "big": np.array([5e4, 1.0])}, f"hospital {hospital}")
    left, right = FixedPointSum(), FixedPointSum()
    for _ in range(50):
        left.add({"big": np.array([5e4])})
        right.add({"big": np.array([5e4])})
    with pytest.raises(OverflowError, match="merged partial sums: parameter 'big'"):
        left.merge(right)
    with pytest.raises(OverflowError, match="hospital 3: parameter 'x' contains NaN"):
        FixedPointSum().add({"x": np.array([np.inf])}, "hospital 3")
