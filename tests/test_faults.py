"""Faults: a killed driver resumes to the same bits, dead workers and a dead server are replaced
mid-run without changing a bit, Ctrl-C stops cleanly, and a run that failed before round 1 leaves a
reusable directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from fedsim.checkpoint import load_checkpoint
from fedsim.cli import main
from fedsim.config import load_config
from fedsim.results import RunDirectory
from fedsim.simulation import Simulation

SMALL = [
    "data.source={kind: synthetic, classes: 3, train_samples: 1600, test_samples: 200}",
    "data.hospitals=16",
    "train.epochs=2",
]
SCHEDULING = [
    "task=scheduling", "train.epochs=1",
    "scheduling={hospitals: 4, eval_episodes: 1, env: {episode_hours: 4}, dqn: {steps_per_epoch: 60, "
    "learning_starts: 30, buffer_size: 200, batch_size: 16, target_update_steps: 40, exploration_steps: 120}}",
]
WALL_CLOCK = {"seconds", "strategy_qmix_som_seconds"}


def assert_same_run(one: Path, two: Path) -> None:
    """Bitwise-equal metrics tables (NaN where the other has NaN), wall-clock columns aside."""
    for table in ("rounds", "clients", "hospital_eval", "partition"):
        first, second = (pq.read_table(run / f"{table}.parquet").to_pydict() for run in (one, two))
        assert first.keys() == second.keys(), table
        for column in first.keys() - WALL_CLOCK:
            np.testing.assert_array_equal(np.array(first[column]), np.array(second[column]), err_msg=f"{table}.{column}")


@contextmanager
def interrupted_in_round(round_index: int, monkeypatch) -> Iterator[None]:
    """Within: a Simulation is interrupted (KeyboardInterrupt) as it writes round `round_index`."""
    original = Simulation._write_round

    def interrupting(self, outcome, *rest):
        if outcome.round_index == round_index:
            raise KeyboardInterrupt
        return original(self, outcome, *rest)

    monkeypatch.setattr(Simulation, "_write_round", interrupting)
    try:
        yield
    finally:
        monkeypatch.setattr(Simulation, "_write_round", original)


def _finished(run: Path) -> int:
    return len(list((run / "rounds.parquet").glob("part-*.parquet")))


def _kill_driver_after(run: Path, settings: list[str], rounds_done: int) -> None:
    """Start `fedsim run` in its own process group and SIGKILL it once `rounds_done` rounds finished."""
    command = [sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--out", str(run)]
    for setting in settings:
        command += ["--set", setting]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while _finished(run) < rounds_done:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the driver finished no rounds in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("settings", [
    ["strategy=fedadam"],
    ["strategy=scaffold", "pipeline=[{stage: clip, max_norm: 1.0}]"],
    ["strategy=fedmrl", "sampling.clients_per_round=6"],
    ["strategy={name: ifca, clusters: 2}", "eval.personalise_steps=2", "sampling.clients_per_round=6"],
    SCHEDULING,
    ["systems={deadline: 2, stragglers: partial, start_hour: 17.9995}", "sampling.scheme=available", "sampling.clients_per_round=8"],
], ids=["fedadam", "scaffold+clip", "fedmrl", "ifca+fine-tuning", "scheduling-dqn", "systems-clock"])
def test_a_killed_driver_resumes_to_the_bits_of_an_uninterrupted_run(settings: list[str], tmp_path: Path) -> None:
    base = SMALL + ["rounds=4", "engine.backend=in_process"] if settings is not SCHEDULING else ["rounds=4", "engine.backend=in_process"]
    overrides = base + settings
    Simulation(load_config(None, overrides), tmp_path / "clean", quiet=True).run()
    _kill_driver_after(tmp_path / "killed", overrides, rounds_done=2)
    assert load_checkpoint(tmp_path / "killed") is not None and _finished(tmp_path / "killed") < 4
    assert main(["run", "--quiet", "--resume", str(tmp_path / "killed")]) == 0
    assert_same_run(tmp_path / "clean", tmp_path / "killed")
    events = pq.read_table(tmp_path / "killed" / "events.parquet").to_pydict()
    assert events["event"] == ["resumed"]


def _kill_during_round(run: Path, process_title: str, round_index: int, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs one of this test process's Ray actors titled `process_title` while
    `round_index` runs."""
    def kill() -> None:
        deadline = time.monotonic() + 120
        while _finished(run) < round_index - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # into the round
        for child in psutil.Process().children(recursive=True):
            try:
                if child.cmdline() and child.cmdline()[0].startswith(process_title):
                    child.send_signal(signal.SIGKILL)
                    killed.append(child.pid)
                    return
            except psutil.Error:
                continue

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("victim", "settings", "event"), [
    ("ray::WorkerCore", ["strategy=fedavg", "sampling.clients_per_round=8", "engine.workers=2"], "worker_replaced"),
    ("ray::WorkerCore", ["strategy=fedmrl", "sampling.clients_per_round=8", "engine.workers=2"], "worker_replaced"),
    ("ray::ServerCore", ["strategy=fedadam", "engine.workers=1"], "server_replaced"),  # restored from the checkpoint
], ids=["worker-fedavg", "worker-fedmrl", "server-fedadam"])
def test_an_actor_killed_mid_round_is_replaced_and_changes_no_bit(victim, settings, event, ray_cluster, tmp_path: Path) -> None:
    overrides = SMALL + ["rounds=3", *settings]
    Simulation(load_config(None, overrides + ["engine.backend=in_process"]), tmp_path / "clean", quiet=True).run()
    killed: list[int] = []
    killer = _kill_during_round(tmp_path / "faulted", victim, 2, killed)
    Simulation(load_config(None, overrides), tmp_path / "faulted", quiet=True).run()
    killer.join()
    assert killed, f"no {victim} was killed"
    assert_same_run(tmp_path / "clean", tmp_path / "faulted")
    assert event in pq.read_table(tmp_path / "faulted" / "events.parquet").to_pydict()["event"]


@pytest.mark.ray
def test_ctrl_c_says_where_it_stopped_and_leaves_no_ray_process(tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--out", str(out), "--set", "rounds=30"]
    for setting in SMALL:
        command += ["--set", setting]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while _finished(out) < 1:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    descendants = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip() and "Token authentication is enabled" not in line]
    assert len(lines) == 1 and lines[0].startswith("fedsim: interrupted after round ") and "fedsim run --resume" in lines[0], stderr
    time.sleep(2)
    assert not [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "Ray processes left behind"


def test_a_run_that_failed_before_round_one_leaves_a_reusable_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = SMALL + ["rounds=1", "engine.backend=in_process"]
    RunDirectory.create(out, load_config(None, overrides))  # what a failed start leaves: config.yaml only
    Simulation(load_config(None, overrides), out, quiet=True).run()
    assert _finished(out) == 1
    with pytest.raises(ValueError, match="already holds a run"):
        Simulation(load_config(None, overrides), out, quiet=True)


def test_compare_resumes_an_interrupted_run_instead_of_refusing_it(tmp_path: Path, monkeypatch) -> None:
    from fedsim.comparison import plan_runs, run_all

    overrides = SMALL + ["rounds=3", "engine.backend=in_process"]
    clean_dir = tmp_path / "clean"
    Simulation(load_config(None, overrides + ["seed=0"]), clean_dir, quiet=True).run()
    runs = plan_runs(None, overrides, ["fedavg"], [0])
    with interrupted_in_round(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        run_all(runs, tmp_path / "compare")
    interrupted = tmp_path / "compare" / "fedavg" / "seed-0"
    assert _finished(interrupted) == 2 and load_checkpoint(interrupted).round_index == 2
    run_all(runs, tmp_path / "compare")
    assert_same_run(clean_dir, interrupted)


def test_a_checkpoint_from_before_asynchronous_aggregation_resumes(tmp_path: Path, monkeypatch) -> None:
    """Checkpoints written before the server kept pending asynchronous updates (no `pending` in
    its state, no `asynchronous` field) resume to the bits of an uninterrupted run."""
    import dataclasses
    import pickle

    from fedsim.checkpoint import CHECKPOINT

    overrides = SMALL + ["rounds=3", "engine.backend=in_process"]
    clean_dir, interrupted = tmp_path / "clean", tmp_path / "interrupted"
    Simulation(load_config(None, overrides), clean_dir, quiet=True).run()
    with interrupted_in_round(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        Simulation(load_config(None, overrides), interrupted, quiet=True).run()
    checkpoint = load_checkpoint(interrupted)
    older = {field.name: getattr(checkpoint, field.name) for field in dataclasses.fields(checkpoint) if field.name != "asynchronous"}
    older["server"] = {key: value for key, value in checkpoint.server.items() if key != "pending"}
    stripped = type(checkpoint).__new__(type(checkpoint))
    stripped.__dict__.update(older)  # as unpickled from an older fedsim: the new field falls back to its default
    (interrupted / CHECKPOINT).write_bytes(pickle.dumps(stripped))
    Simulation.resume(interrupted, quiet=True).run()
    assert_same_run(clean_dir, interrupted)
