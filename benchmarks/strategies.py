"""Throughput (and, on GPU, peak memory) of one recipe under several strategies, as ratios to a baseline.

Each strategy is a real `trainer fit` run in its own process; the first strategy listed is the baseline
the others are divided by (machines here are shared and noisy: compare ratios from one invocation).

    python benchmarks/strategies.py                                   # CPU: auto vs ddp vs ZeRO 1-3, 2 processes
    python benchmarks/strategies.py --accelerator gpu --devices 1 --precision bf16-mixed \\
        --strategies auto,deepspeed_stage_1,deepspeed_stage_2,deepspeed_stage_3 --steps 200

Writes benchmarks/results/<date>-strategies-<device>.json and prints its path.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "tiny_shakespeare"


def run(recipe: str, strategy: str, args: argparse.Namespace, workdir: Path) -> dict:
    words = [
        f"data.path={args.data}", f"trainer.strategy={strategy}", f"trainer.accelerator={args.accelerator}",
        f"trainer.devices={args.devices}", f"trainer.precision={args.precision}", f"trainer.max_steps={args.steps}",
        "trainer.enable_progress_bar=false", "trainer.limit_val_batches=2", "data.max_eval_samples=64",
        f"run_dir={workdir / strategy}", *args.overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run([sys.executable, "-m", "trainer", "fit", recipe, *words], capture_output=True, text=True,
                            env=env)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{strategy} failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout)
    return {key: summary.get(key) for key in ("samples_per_second", "train_seconds", "peak_gpu_memory_bytes", "val")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="shakespeare_gpt")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument(
        "--strategies", default="auto,ddp,deepspeed_stage_1,deepspeed_stage_2,deepspeed_stage_3,fsdp,fsdp_shard_grad_op"
    )
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", default="2")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result file")
    parser.add_argument("overrides", nargs="*", help="extra key=value words for every run")
    args = parser.parse_args()
    if args.accelerator == "cpu" and not args.overrides:  # a model small enough for CPU processes
        args.overrides = ["model.d_model=64", "model.n_heads=4", "model.n_layers=2", "data.block_size=64"]

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            # `auto` is one process: the baseline of a multi-process comparison.
            devices = "1" if strategy == "auto" else args.devices
            results[strategy] = run(args.recipe, strategy, argparse.Namespace(**{**vars(args), "devices": devices}),
                                    Path(tmp))  # fmt: skip
            results[strategy]["devices"] = devices
    first = results[next(iter(results))]
    for row in results.values():
        row["throughput_ratio_to_baseline"] = round(row["samples_per_second"] / first["samples_per_second"], 3)
        if row["peak_gpu_memory_bytes"] and first["peak_gpu_memory_bytes"]:  # on GPU: the summary's peak
            row["peak_memory_ratio_to_baseline"] = round(
                row["peak_gpu_memory_bytes"] / first["peak_gpu_memory_bytes"], 3
            )

    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else f"cpu x{os.cpu_count()}"
    record = {
        "date": datetime.date.today().isoformat(),
        "device": device,
        "recipe": args.recipe,
        "precision": args.precision,
        "steps": args.steps,
        "overrides": args.overrides,
        "results": results,
    }
    slug = "gpu" if args.accelerator == "gpu" else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{record['date']}-strategies-{slug}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
