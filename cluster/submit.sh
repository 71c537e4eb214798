#!/usr/bin/env bash
# Submit a fedsim run or sweep to a Ray cluster as a Ray job, with this repository as its code.
#
#   export RAY_ADDRESS=http://127.0.0.1:8265          # the cluster's dashboard (see cluster/README.md)
#   cluster/submit.sh run experiments/configs/quickstart.yaml --out /mnt/shared/runs/q1 [--set k=v ...]
#   cluster/submit.sh sweep experiments/sweeps/hospitals.yaml --out /mnt/shared/sweeps/h1
#
# The working directory (this repository, minus what cluster/runtime_env.json excludes) is uploaded
# and put on the import path of the job's driver and of every worker, so the cluster runs exactly
# this checkout; the cluster image must already hold fedsim's dependencies (Ray, torch, ...).
# Token authentication: the token is read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
# ~/.ray/auth_token (in that order); RAY_AUTH_MODE defaults to token here.
# The command waits and streams the job's logs; Ctrl-C detaches and leaves the job running.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://127.0.0.1:8265}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
case "${1:-}" in
  run) entrypoint=(python -m fedsim.cli run) ;;
  sweep) entrypoint=(python experiments/sweep.py) ;;
  *) echo "usage: cluster/submit.sh run|sweep ARGS... (see the top of this script)" >&2; exit 2 ;;
esac
shift
exec ray job submit --working-dir . --runtime-env-json "$(cat cluster/runtime_env.json)" -- "${entrypoint[@]}" "$@"
