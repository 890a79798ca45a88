#!/usr/bin/env bash
# Train a recipe on this machine, one process per device the recipe asks for, started by torchrun's agent:
#   launch/single_node.sh shakespeare_gpt trainer.strategy=ddp                  # every local GPU
#   launch/single_node.sh digits_cnn trainer.accelerator=cpu trainer.devices=2  # two CPU processes over gloo
# The recipe decides the count (`trainer.devices`; auto: every GPU, or one CPU process); NPROC_PER_NODE,
# if set, must agree with a count the recipe names. The recipe and its overrides pass through untouched.
# `trainer fit` runs the agent itself (the exit statuses of the README hold); with MAX_RESTARTS above 0,
# torchrun's own command does (as trainer.cluster.torchrun: the same exit statuses), restarting failed workers
# that many times.
set -euo pipefail

PYTHON="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # what torchrun sets for several workers, without its banner
# Also checks the recipe: a bad one stops here, with its one-line error and exit status 2.
NPROC_PER_NODE="$("$PYTHON" -m trainer devices ${NPROC_PER_NODE:+--expect "$NPROC_PER_NODE"} "$@")"

if [[ "${MAX_RESTARTS:-0}" -gt 0 ]]; then
  # --standalone: a private rendezvous on a free local port, so several jobs can share a machine.
  command=("$PYTHON" -m trainer.cluster.torchrun --standalone --nnodes=1 --nproc_per_node="$NPROC_PER_NODE"
    --max-restarts="$MAX_RESTARTS" -m trainer fit "$@")
else
  command=("$PYTHON" -m trainer fit "$1" "trainer.devices=$NPROC_PER_NODE" "${@:2}")
fi
echo "+ ${command[*]}" >&2
exec "${command[@]}"
