#!/usr/bin/env bash
# Train a recipe on this machine through torchrun, one process per device the recipe asks for:
#   launch/single_node.sh shakespeare_gpt trainer.strategy=ddp                  # every local GPU
#   launch/single_node.sh digits_cnn trainer.accelerator=cpu trainer.devices=2  # two CPU processes over gloo
# The recipe decides the count (`trainer.devices`; auto: every GPU, or one CPU process); NPROC_PER_NODE,
# if set, must agree with a count the recipe names. The recipe and its overrides pass through untouched.
set -euo pipefail

PYTHON="${PYTHON:-python}"
# Also checks the recipe: a bad one stops here, with its one-line error and exit status 2.
NPROC_PER_NODE="$("$PYTHON" -m trainer devices ${NPROC_PER_NODE:+--expect "$NPROC_PER_NODE"} "$@")"

# --standalone: a private rendezvous on a free local port, so several jobs can share a machine.
command=("$PYTHON" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$NPROC_PER_NODE"
  --max-restarts="${MAX_RESTARTS:-0}" -m trainer fit "$@")
echo "+ ${command[*]}" >&2
exec "${command[@]}"
