"""A real two-node Ray cluster on this machine: submit a fedsim run through the Jobs API.

The cluster is started with `ray start` (a head with the dashboard, which the Jobs API needs, and
a second raylet joining it), on free ports and its own temp dir, with token authentication on and
a token of its own (RAY_AUTH_TOKEN), so it neither reads nor writes ~/.ray/auth_token and does not
meet other Ray clusters on this machine. Every address the test dials is 127.0.0.1 (Ray on Linux
still registers its nodes under the machine's own interface address, whatever --node-ip-address
says, so node-to-node traffic stays on this host). Each node has one CPU, so a run with two
single-CPU workers can only start by placing one worker on each node. Teardown stops exactly the
processes this module started (never `ray stop`, which would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
RUN = [
    "rounds=2",
    "data.hospitals=6",
    "data.source={kind: synthetic, classes: 3, train_samples: 600, test_samples: 200}",
    "data.partition={scheme: dirichlet, alpha: 0.5, min_samples: 5}",
    "train.epochs=1",
    "engine.workers=2",
]


@dataclass
class LocalCluster:
    gcs_address: str
    dashboard_url: str
    token: str
    env: dict[str, str]  # what a process on this machine needs to reach the cluster (auth included)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _node_flags(ports: list[int]) -> list[str]:
    names = ["node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port"]
    return [f"--{name}={port}" for name, port in zip(names, ports)]


def _alive_nodes(cluster: LocalCluster) -> int:
    request = urllib.request.Request(f"{cluster.dashboard_url}/api/v0/nodes", headers=cluster.headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        nodes = json.load(response)["data"]["result"]["result"]
    return sum(node["state"] == "ALIVE" for node in nodes)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each `ray start --block` (it then stops the Ray processes it started), then kill
    whatever of their process trees is left."""
    tree = []
    for process in processes:
        try:
            tree += psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for process in reversed(processes):  # the joining node first, the head last
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(tree, timeout=10)
    for leftover in alive:
        leftover.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def local_cluster():
    if shutil.which("ray") is None:
        pytest.skip("the `ray` command is not on PATH")
    temp_dir = tempfile.mkdtemp(prefix="fsray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs, dashboard, client, *ports = _free_ports(15)
    token = secrets.token_hex(16)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    common = ["--block", f"--node-ip-address={HOST}", "--num-cpus=1", "--num-gpus=0",
              f"--object-store-memory={200 * 1024**2}", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    head = ["ray", "start", "--head", f"--port={gcs}", "--include-dashboard=true", f"--dashboard-host={HOST}",
            f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}", *_node_flags(ports[:6]), *common]
    joining = ["ray", "start", f"--address={HOST}:{gcs}", *_node_flags(ports[6:]), *common]
    log = open(Path(temp_dir) / "ray-start.log", "wb")
    processes: list[subprocess.Popen] = []
    cluster = LocalCluster(f"{HOST}:{gcs}", f"http://{HOST}:{dashboard}", token, {**env, "RAY_ADDRESS": f"{HOST}:{gcs}"})
    try:
        processes.append(subprocess.Popen(head, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: _alive_nodes(cluster) == 1, processes, temp_dir, "the head node")
        processes.append(subprocess.Popen(joining, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: _alive_nodes(cluster) == 2, processes, temp_dir, "the second node")
        yield cluster
    finally:
        _stop(processes)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait(ready, processes: list[subprocess.Popen], temp_dir: str, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = [process for process in processes if process.poll() is not None]
        assert not exited, f"`ray start` exited: {(Path(temp_dir) / 'ray-start.log').read_text()[-3000:]}"
        try:
            if ready():
                return
        except OSError:
            pass  # the dashboard is not up yet
        time.sleep(0.5)
    raise AssertionError(f"{what} did not come up within {timeout:.0f} s")


def test_fedsim_run_submitted_as_a_ray_job(local_cluster: LocalCluster, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path / "job-run"
    entrypoint = [sys.executable, "-m", "fedsim.cli", "run", "--quiet", "--out", str(out)]
    for setting in RUN:
        entrypoint += ["--set", setting]
    runtime_env = {**json.loads((REPO / "cluster" / "runtime_env.json").read_text()), "working_dir": str(REPO)}
    client = JobSubmissionClient(local_cluster.dashboard_url, headers=local_cluster.headers)
    job = client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env)
    deadline = time.monotonic() + 240
    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            client.stop_job(job)
            pytest.fail(f"job still {status} after 240 s:\n{client.get_job_logs(job)[-3000:]}")
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert str(out) in logs  # --quiet prints the run directory
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    assert [row["round"] for row in rounds] == [1, 2]
    assert all(row["hospitals"] == 6 and 0 <= row["global_accuracy"] <= 1 for row in rounds)
    clients = pq.read_table(out / "clients.parquet")
    assert clients.num_rows == 2 * 6
    resources = pq.read_table(out / "resources.parquet").to_pylist()
    assert all(row["workers_peak_rss"] > 0 and row["object_store_bytes"] > 0 for row in resources)


def test_submit_script_gpu_request_fails_fast_on_a_gpu_less_cluster(local_cluster: LocalCluster, tmp_path: Path) -> None:
    """cluster/submit.sh as a user runs it; the job's driver joins the cluster via RAY_ADDRESS and
    must stop at once with the one-line error, not wait forever for a GPU."""
    command = [str(REPO / "cluster" / "submit.sh"), "run", "--quiet", "--out", str(tmp_path / "never")]
    for setting in RUN + ["engine.num_gpus=0.25"]:
        command += ["--set", setting]
    env = {**local_cluster.env, "RAY_ADDRESS": local_cluster.dashboard_url}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 1, output[-3000:]  # `ray job submit` exits 1 when the job failed
    errors = {line for line in output.splitlines() if line.startswith("fedsim: error:")}  # streamed, then in Ray's summary
    assert len(errors) == 1, output[-3000:]
    error = errors.pop()
    assert error.startswith("fedsim: error: engine.num_gpus:") and "no GPUs" in error, output[-3000:]
