#!/usr/bin/env bash
# Train a recipe on one node of a multi-node job; run the same command on every node:
#   NNODES=2 MASTER_ADDR=node0 RDZV_ID=gpt-2026-12-01 launch/torchrun.sh shakespeare_gpt ...
# Rendezvous is torchrun's c10d on MASTER_ADDR:MASTER_PORT; nodes may join in any order. RDZV_ID names the
# job (the same on every node, new for every job): its run directory is runs/<recipe>/torchrun-<RDZV_ID>,
# where an elastic restart finds it again. On one node it defaults to a fresh id. Workers per node: the
# recipe's count (`trainer.devices`; auto: every GPU, or one CPU process), or NPROC_PER_NODE, which must
# then agree with a count the recipe names. RDZV_CONF passes torchrun's --rdzv-conf (e.g. read_timeout=120:
# how long a node waits for the head's store, 60 s by default). torchrun runs as trainer.cluster.torchrun: the
# same agent and arguments, ending with the README's exit statuses (5: a worker died) instead of a traceback.
set -euo pipefail

NNODES="${NNODES:-1}"
if [[ "$NNODES" -gt 1 && -z "${MASTER_ADDR:-}" ]]; then
  echo "error: set MASTER_ADDR to the head node's hostname or address on every node (NNODES=$NNODES)" >&2
  exit 2
fi
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
PYTHON="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # what torchrun sets for several workers, without its banner
# After SIGTERM torchrun gives its workers this long to save a checkpoint before SIGKILL (its default: 30 s).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}"
if [[ -z "${RDZV_ID:-}" ]]; then
  if [[ "$NNODES" -gt 1 ]]; then
    echo "error: set RDZV_ID to the same new name on every node (it names the job and its run directory)" >&2
    exit 2
  fi
  RDZV_ID="$("$PYTHON" -c 'import uuid; print(uuid.uuid4().hex[:12])')"
fi
# Also checks the recipe: a bad one stops here, with its one-line error and exit status 2.
NPROC_PER_NODE="$("$PYTHON" -m trainer devices ${NPROC_PER_NODE:+--expect "$NPROC_PER_NODE"} "$@")"
# The head node's name resolves here and, across nodes, this node's hostname to a reachable address: one
# line now instead of a rendezvous traceback or a hang later.
"$PYTHON" -m trainer nodecheck "$MASTER_ADDR" --nnodes "$NNODES"

command=("$PYTHON" -m trainer.cluster.torchrun --nnodes="$NNODES" --nproc_per_node="$NPROC_PER_NODE"
  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$RDZV_ID"
  ${RDZV_CONF:+"--rdzv-conf=$RDZV_CONF"} --max-restarts="${MAX_RESTARTS:-0}" -m trainer fit "$@")
echo "+ ${command[*]}" >&2
exec "${command[@]}"
