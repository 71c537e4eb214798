"""Fault injection: a 20-round run survives killed workers and a killed driver, to the same bits.

Runs the same config twice: once clean (in-process, no faults), once as `fedsim run` in its own
process while this script SIGKILLs random worker actors of it every few seconds and, once, the
driver itself (then continues it with `fedsim run --resume`). Then it compares every metrics
table bitwise (wall-clock columns aside) and prints what it killed and the result.

    python experiments/bench/faults.py [--rounds 20] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

from fedsim.config import load_config
from fedsim.simulation import Simulation

SETTINGS = [
    "data.source={kind: synthetic, classes: 3, train_samples: 2000, test_samples: 300}",
    "data.hospitals=20", "train.epochs=1", "strategy=fedadam", "engine.workers=2",
]
WALL_CLOCK = {"seconds"}


def finished(run: Path) -> int:
    return len(list((run / "rounds.parquet").glob("part-*.parquet")))


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_random_worker(driver: subprocess.Popen, rng: random.Random) -> int | None:
    """SIGKILL one of the driver's worker actors; returns its pid (None if there was none)."""
    workers = [p for p in psutil.Process(driver.pid).children(recursive=True)
               if _title(p).startswith("ray::WorkerCore")]
    if not workers:
        return None
    victim = rng.choice(workers)
    victim.send_signal(signal.SIGKILL)
    return victim.pid


def _title(process: psutil.Process) -> str:
    try:
        return (process.cmdline() or [""])[0]
    except psutil.Error:
        return ""


def faulted_run(run: Path, overrides: list[str], rounds: int, rng: random.Random) -> list[str]:
    """The faulted run; returns a log of what was killed."""
    log: list[str] = []
    command = [sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--out", str(run)]
    for setting in overrides:
        command += ["--set", setting]
    driver_kill_at = rounds // 2
    driver = start(command)
    driver_killed, last_kill_round = False, 0
    while True:
        time.sleep(rng.uniform(0.5, 2.0))
        if driver.poll() is not None:
            if driver.returncode != 0:
                raise SystemExit(f"the faulted run failed:\n{driver.stderr.read()[-3000:]}")
            return log
        done = finished(run)
        if done <= last_kill_round or rng.random() < 0.5:
            continue  # at most one kill per round, in about half the rounds, never before round 1 finished
        last_kill_round = done
        if not driver_killed and done >= driver_kill_at:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
            driver_killed = True
            log.append(f"killed the driver after round {finished(run)} (SIGKILL to its process group)")
            driver = start([sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--resume", str(run)])
            log.append("resumed with fedsim run --resume")
            continue
        pid = kill_random_worker(driver, rng)
        if pid is not None:
            log.append(f"killed worker pid {pid} during round {done + 1}")


def compare(one: Path, two: Path) -> list[str]:
    """Names of the columns that differ between the two runs' metrics tables."""
    differing = []
    for table in ("rounds", "clients", "hospital_eval", "partition"):
        first, second = (pq.read_table(run / f"{table}.parquet").to_pydict() for run in (one, two))
        if first.keys() != second.keys():
            differing.append(f"{table}: columns {sorted(first.keys() ^ second.keys())}")
            continue
        for column in sorted(first.keys() - WALL_CLOCK):
            if not np.array_equal(np.array(first[column]), np.array(second[column]), equal_nan=True):
                differing.append(f"{table}.{column}")
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seeds the run and the choice of what to kill")
    parser.add_argument("--out", help="folder for the two run directories (default: a temporary one)")
    args = parser.parse_args()
    folder = Path(args.out or tempfile.mkdtemp(prefix="fedsim-faults-"))
    overrides = SETTINGS + [f"rounds={args.rounds}", f"seed={args.seed}"]
    started = time.perf_counter()
    Simulation(load_config(None, overrides + ["engine.backend=in_process"]), folder / "clean", quiet=True).run()
    print(f"clean run: {args.rounds} rounds in {time.perf_counter() - started:.0f} s -> {folder / 'clean'}")
    started = time.perf_counter()
    log = faulted_run(folder / "faulted", overrides, args.rounds, random.Random(args.seed))
    print(f"faulted run: {args.rounds} rounds in {time.perf_counter() - started:.0f} s -> {folder / 'faulted'}")
    for line in log:
        print(f"  {line}")
    events = pq.read_table(folder / "faulted" / "events.parquet").to_pylist()
    print(f"events.parquet: {len(events)} recoveries ({', '.join(sorted({e['event'] for e in events}))})")
    differing = compare(folder / "clean", folder / "faulted")
    if differing:
        print("RESULT: the faulted run DIFFERS from the clean run in " + ", ".join(differing))
        return 1
    print("RESULT: every metrics table of the faulted run is bitwise identical to the clean run's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
