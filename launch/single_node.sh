#!/usr/bin/env bash
# Train a recipe on this machine through torchrun, one process per local device:
#   launch/single_node.sh shakespeare_gpt trainer.strategy=ddp
# Every GPU by default; without one, NPROC_PER_NODE CPU processes (default 1) over gloo.
# The recipe and its overrides pass through untouched.
set -euo pipefail

NPROC_PER_NODE="${NPROC_PER_NODE:-$(python -c 'import torch; print(torch.cuda.device_count() or 1)')}"
PYTHON="${PYTHON:-python}"

# --standalone: a private rendezvous on a free local port, so several jobs can share a machine.
command=("$PYTHON" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$NPROC_PER_NODE"
  --max-restarts="${MAX_RESTARTS:-0}" -m trainer fit "$@")
echo "+ ${command[*]}" >&2
exec "${command[@]}"
