#!/usr/bin/env bash
# Starts N copies of a command on this machine as one data-parallel job, with the variables torchrun would set
# (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), for machines without Python.
# If one rank fails, the others are stopped; the exit status is the first non-zero one.
#   scripts/launch_local.sh 2 build/apps/nepa_pretrain --config configs/pretrain/fmnist_tiny.yaml --set train.micro_batch=64
# torchrun works as well: torchrun --no-python --nproc_per_node 2 build/apps/nepa_pretrain --config ...
set -uo pipefail
if (($# < 2)) || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N command [args...]" >&2
  exit 2
fi
N=$1; shift
PORT=${MASTER_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 29500)}
pids=()
for ((r = 0; r < N; r++)); do
  RANK=$r WORLD_SIZE=$N LOCAL_RANK=$r LOCAL_WORLD_SIZE=$N MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=$PORT \
    "$@" &
  pids+=($!)
done
# Signals for the job go to every rank (as torchrun and SLURM deliver them), so a SIGTERM checkpoints cleanly.
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
status=0
while ((${#pids[@]} > 0)); do
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid"
    rc=$?
    unset "pids[$i]"
    if ((rc != 0 && status == 0)); then
      status=$rc
      # A rank failed: the others would only wait for dist.timeout_s.
      ((${#pids[@]} > 0)) && kill -TERM "${pids[@]}" 2>/dev/null
    fi
  done
  sleep 0.2
done
exit $status
