#!/usr/bin/env bash
# Train a recipe on one node of a multi-node job; run the same command on every node:
#   NNODES=2 NPROC_PER_NODE=8 MASTER_ADDR=node0 MASTER_PORT=29500 launch/torchrun.sh shakespeare_gpt ...
# Rendezvous is torchrun's c10d on MASTER_ADDR:MASTER_PORT; nodes may join in any order.
# The recipe and its overrides pass through untouched; the trainer takes devices and nodes from torchrun.
set -euo pipefail

NNODES="${NNODES:-1}"
NPROC_PER_NODE="${NPROC_PER_NODE:-$(python -c 'import torch; print(torch.cuda.device_count() or 1)')}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
RDZV_ID="${RDZV_ID:-trainer}"
PYTHON="${PYTHON:-python}"

command=("$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE"
  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$RDZV_ID"
  --max-restarts="${MAX_RESTARTS:-0}" -m trainer fit "$@")
echo "+ ${command[*]}" >&2
exec "${command[@]}"
