#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one command, on a bare machine with one GPU and no network.
#
#   benchmarks/gpu_suite.sh OUT_DIR
#
# Installs what the machine lacks from a copy of ../shared/wheels/gpu-py312 (WHEELS, default .whl/), then
# runs `pytest -m gpu` and the GPU benchmarks, each under its own time limit so the whole fits in 12 minutes,
# and writes every log and result file into OUT_DIR (plus a summary, suite.json). A step that fails is
# recorded and the suite goes on; the exit status is the number of failed steps.
#
# Environment: TRAINER_SHARED_DATA (the data sets; default ../shared/data), WHEELS, and STEP_SECONDS to
# scale every step's limit (e.g. 2 on a slower GPU).
set -euo pipefail

out=${1:?usage: benchmarks/gpu_suite.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRAINER_SHARED_DATA=${TRAINER_SHARED_DATA:-$PWD/../shared/data}
export TRAINER_CACHE=${TRAINER_CACHE:-$out/cache} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

if ! python3 -c "import deepspeed, datasets, pydantic, omegaconf, torchdata" 2>/dev/null; then
  wheels=${WHEELS:-.whl}
  echo "+ python3 -m pip install --no-index --no-deps --target .site $wheels/*.whl"
  python3 -m pip install -q --no-index --no-deps --no-compile --target .site "$wheels"/*.whl
  export PYTHONPATH="$PWD/.site:$PYTHONPATH"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name(0))"

failed=0
results=()
step() {  # step NAME SECONDS COMMAND...: run it under a limit, log to OUT_DIR/NAME.log, record the status
  local name=$1 limit=$2 started status
  shift 2
  limit=$(python3 -c "print(int($limit * float('${STEP_SECONDS:-1}')))")
  echo "+ [$name, ${limit}s] $*"
  started=$(date +%s)
  set +e
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  status=$?
  set -e
  tail -n 3 "$out/$name.log"
  results+=("\"$name\": {\"status\": $status, \"seconds\": $(($(date +%s) - started))}")
  if [ "$status" -ne 0 ]; then failed=$((failed + 1)); fi
}

step pytest_gpu 210 python3 -m pytest -m gpu -q -p no:cacheprovider --junitxml="$out/pytest_gpu.xml" tests/test_gpu.py
step overhead 95 python3 benchmarks/overhead.py --accelerator gpu --precision bf16-mixed --steps 60 --pairs 2 \
  --families cnn,lstm,transformer,gpt,custom --out "$out"
# A pretrained encoder needs transformers (and HF's Trainer, accelerate), which ../shared/wheels lacks so far.
if python3 -c "import transformers, accelerate" 2>/dev/null; then
  step overhead_pretrained 60 python3 benchmarks/overhead.py --accelerator gpu --precision bf16-mixed --steps 60 \
    --pairs 2 --memory-pairs 2 --families pretrained --out "$out"
  step hf_trainer 60 python3 benchmarks/hf_trainer.py --accelerator gpu --precision bf16-mixed --steps 40 \
    --batch 64 --pairs 2 --out "$out"
else
  echo "+ [overhead_pretrained, hf_trainer] skipped: transformers or accelerate is not installed"
  results+=("\"overhead_pretrained\": {\"status\": \"skipped: no transformers\"}")
fi
step mfu 100 python3 benchmarks/mfu.py --out "$out"
step time_to_accuracy 50 python3 benchmarks/time_to_accuracy.py --accelerator gpu --precision bf16-mixed \
  --eval-every 50 --out "$out" data.global_batch_size=256 optim.lr=4e-3 performance.channels_last=true
step strategies 85 python3 benchmarks/strategies.py --accelerator gpu --devices 1 --precision bf16-mixed \
  --strategies auto,deepspeed_stage_1,deepspeed_stage_2,deepspeed_stage_3,fsdp --steps 100 --out "$out"

(IFS=,; echo "{${results[*]}}") >"$out/suite.json"
echo "suite: $failed failed step(s); results in $out"
exit "$failed"
