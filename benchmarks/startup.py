"""Start-up of each strategy: how long `trainer fit` takes before and after the training itself.

Each strategy runs one optimizer step of a small GPT through the real CLI, in its own process (one process
for `auto`, `--devices` for the others). Start-up is the command's wall time less the training, validation
and checkpoint seconds that summary.json reports: imports, data, model, process group, engine, and the
final writes. DeepSpeed compiles some C++ ops on first use on a machine (trainer/distributed/deepspeed_ops.py):
the strategies named by `--cold` run twice, first with an empty extensions cache (cold: what a new machine
pays once) and then with the cache that run filled (warm: every later run); the others run warm with the
machine's own cache, primed first by an unmeasured ZeRO-Offload run. Ratios are to `auto` from the same
invocation.

    python benchmarks/startup.py
    python benchmarks/startup.py --strategies auto,ddp,deepspeed_stage_2

Writes benchmarks/results/<date>-startup-cpu.{json,md} and prints the JSON's path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from record import machine, write_results

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
STRATEGIES = "auto,ddp,deepspeed_stage_1,deepspeed_stage_2,deepspeed_stage_3,deepspeed_stage_2_offload"
WORDS = ["model.d_model=64", "model.n_heads=4", "model.n_layers=2", "data.block_size=64", "trainer.max_steps=1",
         "trainer.limit_val_batches=1", "data.max_eval_samples=32", "trainer.enable_progress_bar=false"]  # fmt: skip


def one_run(strategy: str, devices: str, extensions: Path | None, run_dir: Path) -> dict[str, Any]:
    """`extensions`: the TORCH_EXTENSIONS_DIR to use; None for the machine's own."""
    words = [f"data.path={DATA / 'tiny_shakespeare'}", f"trainer.strategy={strategy}", f"trainer.devices={devices}",
             f"run_dir={run_dir}", *WORDS]  # fmt: skip
    env = {**os.environ, **({"TORCH_EXTENSIONS_DIR": str(extensions)} if extensions else {})}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainer", "fit", "shakespeare_gpt", *words], capture_output=True,
                          text=True, env=env)  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{strategy} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    working = summary["train_seconds"] + summary["val_seconds"] + summary["checkpoint_seconds"]
    compiled = re.findall(r"^trainer: compiling DeepSpeed's (.+?) for this machine", done.stderr, re.MULTILINE)
    return {"wall_seconds": round(wall, 2), "startup_seconds": round(wall - working, 2), "compiled": compiled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--devices", default="2", help="processes for every strategy but auto")
    parser.add_argument("--cold", default="deepspeed_stage_2,deepspeed_stage_2_offload",
                        help="strategies also measured with an empty extensions cache")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result files")
    args = parser.parse_args()
    try:  # before the measuring: an unwritable folder fails at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot write results into {str(args.out)!r}: {err.strerror}")

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cold = args.cold.split(",")
        if any(name.startswith("deepspeed") and name not in cold for name in args.strategies.split(",")):
            one_run("deepspeed_stage_2_offload", args.devices, None, Path(tmp) / "prime")  # builds both ops once
        for strategy in args.strategies.split(","):
            devices = "1" if strategy == "auto" else args.devices
            row: dict[str, Any] = {"devices": devices}
            extensions = None  # the machine's cache, primed above
            if strategy in cold:
                extensions = Path(tmp) / f"extensions-{strategy}"  # its own, empty: the cold run builds
                row["cold"] = one_run(strategy, devices, extensions, Path(tmp) / f"{strategy}-cold")
            row["warm"] = one_run(strategy, devices, extensions, Path(tmp) / strategy)
            results[strategy] = row
            print(f"{strategy}: {row}", file=sys.stderr)
    baseline = next(iter(results.values()))["warm"]["startup_seconds"]
    record = {**machine("cpu"), "words": WORDS, "baseline": next(iter(results)), "results": results}
    header = ["date", "device", "strategy", "processes", "start-up s (warm)", "ratio to baseline", "start-up s (cold)",
              "compiled in the cold run (said on stderr)"]  # fmt: skip
    rows = []
    for strategy, row in results.items():
        warm, cold = row["warm"]["startup_seconds"], row.get("cold", {}).get("startup_seconds", "")
        compiled = "; ".join(row.get("cold", {}).get("compiled", []))
        rows.append([record["date"], record["device"], strategy, row["devices"], warm, round(warm / baseline, 2), cold,
                     compiled or "-"])  # fmt: skip
    out = write_results(args.out, "startup", record, header, rows)
    print(out)


if __name__ == "__main__":
    main()
