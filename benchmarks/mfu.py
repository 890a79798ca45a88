"""Tokens per second and model-FLOPs utilisation (MFU) of the GPT recipe at GPT-2-small shape on one GPU.

The `shakespeare_gpt` recipe at 12 layers, d_model 768, 12 heads, sequence 1024, bf16-mixed, trained through
`trainer.api.fit` as a user would run it. A window of `--steps` optimizer steps after `--warmup` steps (which
take torch.compile's compilation) is timed between two device syncs; nothing else syncs per step.

    FLOPs per token = 6 N + 12 L H Q T     (PaLM, appendix B; nanoGPT's estimate_mfu)

N: parameters less the position embedding, L layers, H heads, Q head width, T sequence length. The
framework's own count (torch's FlopCounterMode over one forward and backward) is reported beside it.
The peak is the device's dense one from trainer.flops (H100 SXM and H200: 989 TFLOP/s in bf16).
The tokenizer is the recipe's (characters, a 65-token vocabulary, where GPT-2 has 50,257), so N is
about 85M rather than 124M; the formula counts whatever N is.

    python benchmarks/mfu.py                          # on a GPU: each setting in --settings, one process each
    python benchmarks/mfu.py --size tiny --accelerator cpu --steps 5 --warmup 2   # a smoke run on a CPU

Writes benchmarks/results/<date>-mfu-<gpu|cpu>.{json,md} and prints the JSON's path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from record import machine, run_child, write_results

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))

SIZES = {
    "gpt2-small": ["model.n_layers=12", "model.d_model=768", "model.n_heads=12", "data.block_size=1024"],
    "tiny": ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", "data.block_size=64"],
}
# What each setting adds to the recipe: the settings a user turns on for speed, one at a time.
SETTINGS = {
    "eager": [],
    "compile": ["performance.compile=true"],
}


def _words(args: argparse.Namespace, setting: str, run_dir: Path) -> list[str]:
    steps = args.warmup + args.steps
    return [f"data.path={DATA / 'tiny_shakespeare'}", *SIZES[args.size], *SETTINGS[setting],
            "model.dropout=0.0", f"data.global_batch_size={args.micro_batch}", f"trainer.precision={args.precision}",
            f"trainer.accelerator={args.accelerator}", "trainer.devices=1", f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1", "trainer.limit_val_batches=0", "checkpoint.monitor=train/loss",
            "data.test_split=null", "trainer.enable_progress_bar=false", "data.pin_memory=true",
            "trainer.log_every_n_steps=1000000", f"run_dir={run_dir}", *args.overrides]  # fmt: skip


def child(args: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from trainer import api
    from trainer.flops import dense_peak

    class Window(L.Callback):
        """The wall time of steps warmup+1 .. warmup+steps, between two device syncs."""

        def __init__(self) -> None:
            self.seconds: float | None = None
            self.parameters = 0
            self._start = 0.0

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.parameters = sum(p.numel() for p in pl_module.model.parameters())

        def on_train_batch_end(self, trainer: L.Trainer, *rest: Any) -> None:
            if trainer.global_step in (args.warmup, args.warmup + args.steps):
                if trainer.strategy.root_device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                if trainer.global_step == args.warmup:
                    self._start = now
                else:
                    self.seconds = now - self._start

    window = Window()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = api.resolve_fit_config("shakespeare_gpt", _words(args, args.child, Path(tmp) / "run"))
        summary = api.fit(cfg, callbacks=[window])
    assert window.seconds is not None, "the run ended before the timed window did"
    m, T = cfg.model, cfg.data.block_size
    tokens_per_second = args.steps * cfg.data.global_batch_size * T / window.seconds
    counted_per_token = summary["flops_per_sample"] / T if summary["flops_per_sample"] else None
    n_params = window.parameters - m.d_model * T  # less the position embedding, as nanoGPT counts
    formula_per_token = 6 * n_params + 12 * m.n_layers * m.n_heads * (m.d_model // m.n_heads) * T
    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else "cpu"
    peak = dense_peak(device, args.precision) if args.accelerator == "gpu" else None
    print(json.dumps({
        "setting": args.child, "tokens_per_second": round(tokens_per_second, 1), "parameters": n_params,
        "flops_per_token_formula": formula_per_token, "flops_per_token_counted": counted_per_token,
        "peak_flops": peak, "mfu": round(tokens_per_second * formula_per_token / peak, 4) if peak else None,
        "mfu_counted": round(tokens_per_second * counted_per_token / peak, 4) if peak and counted_per_token else None,
        "step_ms": round(window.seconds / args.steps * 1e3, 2),
        "peak_gpu_memory_bytes": summary["peak_gpu_memory_bytes"],
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="gpt2-small")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {', '.join(SETTINGS)}")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="gpu")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra key=value words for the recipe")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {', '.join(SETTINGS)}")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be 1 or more")
    try:  # before the measuring: an unwritable folder fails at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot write results into {str(args.out)!r}: {err.strerror}")

    results = {}
    for setting in args.settings.split(","):
        words = ["--child", setting, "--size", args.size, "--micro-batch", str(args.micro_batch), "--steps",
                 str(args.steps), "--warmup", str(args.warmup), "--accelerator", args.accelerator, "--precision",
                 args.precision, *args.overrides]  # fmt: skip
        try:
            results[setting] = run_child(__file__, words)
        except SystemExit as failure:  # one setting failing (compile, say) leaves the others measured
            results[setting] = {"error": str(failure).splitlines()[-1]}
            print(failure, file=sys.stderr)
            continue
        print(f"{setting}: {results[setting]}", file=sys.stderr)

    record = {**machine(args.accelerator), "size": args.size, "micro_batch": args.micro_batch,
              "precision": args.precision, "formula": "6N + 12*L*H*Q*T FLOPs per token", "target_mfu": 0.5,
              "results": results}  # fmt: skip
    header = ["date", "device", "size", "setting", "tokens/s", "MFU (formula)", "MFU (counted)", "ms/step"]
    rows = [[record["date"], record["device"], args.size, setting, r.get("tokens_per_second"), r.get("mfu"),
             r.get("mfu_counted"), r.get("step_ms")] for setting, r in results.items()]  # fmt: skip
    out = write_results(args.out, "mfu", record, header, rows)
    print(out)


if __name__ == "__main__":
    main()
