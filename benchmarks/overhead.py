"""What the framework costs over a hand-written PyTorch loop: step time and peak memory, per model family.

For each family the same model class, data, batch, optimizer, learning-rate schedule, clipping, precision
and step count run (a) in a plain loop and (b) through `trainer.api.fit`, each in a fresh process, in
alternating order, `--pairs` times. A step is timed from the end of one optimizer step to the end of the
next, data loading included; the first `WARMUP` steps and any step with a validation in it are left out.
Reported per family: the median over pairs of (framework median step time / loop median step time), and
of the peak-memory ratio (CUDA's peak allocation on a GPU, the process's peak RSS on a CPU; both sides
import the same libraries, so the RSS compares what training adds).

    python benchmarks/overhead.py                                    # CPU, every family
    python benchmarks/overhead.py --accelerator gpu --precision bf16-mixed --steps 200

Writes benchmarks/results/<date>-overhead-<device>.{json,md} and prints the JSON's path.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
WARMUP = 5

# Each family's recipe, at a size a 2-core CPU runs in seconds (the GPU run passes its own with --size full).
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "cnn": ("mnist_cnn", [f"data.path={DATA / 'mnist'}", "data.max_train_samples=4096"]),
    "lstm": ("imdb_lstm", [f"data.path={DATA / 'imdb'}", "data.max_train_samples=2048", "data.max_length=128",
                           "data.tokenizer.vocab_size=2000", "model.bidirectional=false"]),
    "transformer": ("imdb_transformer", [f"data.path={DATA / 'imdb'}", "data.max_train_samples=2048",
                                         "data.max_length=128", "data.tokenizer.vocab_size=2000"]),
    "gpt": ("shakespeare_gpt", [f"data.path={DATA / 'tiny_shakespeare'}", "model.n_layers=2", "data.block_size=64"]),
}  # fmt: skip


# ----------------------------------------------------------------------------- one measured run (child)


def _config(family: str, args: argparse.Namespace, run_dir: Path) -> Any:
    from trainer import api

    recipe, words = FAMILIES[family]
    words = [*words, f"trainer.max_steps={args.steps}", f"trainer.accelerator={args.accelerator}",
             f"trainer.precision={args.precision}", "trainer.devices=1", "trainer.enable_progress_bar=false",
             "data.max_eval_samples=64", "trainer.limit_val_batches=1", f"run_dir={run_dir}"]  # fmt: skip
    return api.resolve_fit_config(recipe, words)


def _framework(cfg: Any) -> list[float]:
    import lightning as L

    from trainer import api

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.dirty: set[int] = set()  # steps with a validation in them

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            _sync(trainer.strategy.root_device)
            self.ends.append(time.perf_counter())

        def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
            self.dirty.add(len(self.ends))

    clock = StepClock()
    api.fit(cfg, callbacks=[clock])
    return [b - a for i, (a, b) in enumerate(zip(clock.ends, clock.ends[1:], strict=False)) if i + 1 not in clock.dirty]


def _plain_loop(cfg: Any) -> list[float]:
    """What a user would write by hand: the framework's data and model builders, then a bare loop."""
    import torch
    from torch.utils.data import DataLoader

    from trainer.build import build_datamodule, build_task
    from trainer.distributed.batching import plan_batches

    torch.manual_seed(cfg.seed)
    plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, 1)
    datamodule = build_datamodule(cfg, plan)
    datamodule.load()
    task = build_task(cfg, datamodule.facts(), plan, len(datamodule.train_set))
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    model = task.model.to(device)
    optimizer, scheduler = _optimizer_and_schedule(task)
    loader = DataLoader(datamodule.train_set, batch_size=plan.micro_batch_size, shuffle=True, drop_last=True,
                        collate_fn=datamodule.collate_fn, pin_memory=device.type == "cuda")  # fmt: skip
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed")
    ends: list[float] = []
    model.train()
    while len(ends) < cfg.trainer.max_steps:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss = _loss(task, batch)
            loss.backward()
            if cfg.trainer.gradient_clip_val:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            _sync(device)
            ends.append(time.perf_counter())
            if len(ends) == cfg.trainer.max_steps:
                break
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def _loss(task: Any, batch: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    logits = task.model(*task.model_inputs(batch))
    if task.task_name == "language_modeling":
        return F.cross_entropy(logits.flatten(0, 1), batch["input_ids"][:, 1:].flatten())
    return F.cross_entropy(logits, batch["labels"])


def _optimizer_and_schedule(task: Any) -> tuple[Any, Any]:
    configured = task.configure_optimizers()
    if isinstance(configured, dict):
        return configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    return configured, None


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(accelerator: str) -> int:
    if accelerator == "gpu":
        import torch

        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    import trainer.api  # noqa: F401 - both sides import the same libraries before memory is counted

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args.family, args, Path(tmp) / "run")
        steps = _framework(cfg) if args.child == "framework" else _plain_loop(cfg)
    print(json.dumps({"step_seconds": steps[WARMUP:], "peak_memory_bytes": _peak_memory(args.accelerator)}))


# ----------------------------------------------------------------------------- the comparison (parent)


def _measure(variant: str, family: str, args: argparse.Namespace) -> dict[str, Any]:
    words = ["--child", variant, "--family", family, "--steps", str(args.steps), "--accelerator", args.accelerator,
             "--precision", args.precision]  # fmt: skip
    env = {**os.environ, "TRAINER_CACHE": args.cache}
    result = subprocess.run([sys.executable, __file__, *words], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{family} {variant} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(family: str, args: argparse.Namespace) -> dict[str, Any]:
    time_ratios, memory_ratios, loop_steps, framework_steps = [], [], [], []
    for pair in range(args.pairs):
        order = ("loop", "framework") if pair % 2 == 0 else ("framework", "loop")
        runs = {variant: _measure(variant, family, args) for variant in order}
        loop = statistics.median(runs["loop"]["step_seconds"])
        framework = statistics.median(runs["framework"]["step_seconds"])
        time_ratios.append(framework / loop)
        memory_ratios.append(runs["framework"]["peak_memory_bytes"] / runs["loop"]["peak_memory_bytes"])
        loop_steps.append(loop)
        framework_steps.append(framework)
        print(f"{family} pair {pair + 1}: step {framework * 1e3:.2f} ms vs {loop * 1e3:.2f} ms "
              f"({time_ratios[-1]:.3f}), memory {memory_ratios[-1]:.3f}", file=sys.stderr)  # fmt: skip
    return {
        "recipe": FAMILIES[family][0],
        "median_step_time_ratio": round(statistics.median(time_ratios), 4),
        "peak_memory_ratio": round(statistics.median(memory_ratios), 4),
        "loop_step_ms": round(statistics.median(loop_steps) * 1e3, 3),
        "framework_step_ms": round(statistics.median(framework_steps) * 1e3, 3),
        "step_time_ratios": [round(r, 4) for r in time_ratios],
        "memory_ratios": [round(r, 4) for r in memory_ratios],
    }


def _machine(accelerator: str) -> dict[str, str]:
    import torch

    import trainer

    device = torch.cuda.get_device_name(0) if accelerator == "gpu" else f"cpu x{os.cpu_count()}"
    return {"machine": platform.node(), "device": device, "python": platform.python_version(),
            "torch": torch.__version__, "trainer": getattr(trainer, "__version__", "dev")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--child", choices=["loop", "framework"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.steps <= WARMUP + 2:
        parser.error(f"--steps must be more than {WARMUP + 2}: the first {WARMUP} are warm-up")

    with tempfile.TemporaryDirectory() as cache:
        args.cache = cache  # one tokenised-data cache for every run: both sides read the same tensors
        results = {family: compare(family, args) for family in args.families.split(",")}
    date = datetime.date.today().isoformat()
    record = {"date": date, **_machine(args.accelerator), "steps": args.steps, "pairs": args.pairs,
              "precision": args.precision, "targets": {"median_step_time_ratio": 1.02, "peak_memory_ratio": 1.05},
              "results": results}  # fmt: skip
    slug = "gpu" if args.accelerator == "gpu" else "cpu"
    out = HERE / "results" / f"{date}-overhead-{slug}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    rows = [f"| {date} | {record['device']} | {family} | {r['median_step_time_ratio']} | {r['peak_memory_ratio']} | "
            f"{r['loop_step_ms']} | {r['framework_step_ms']} |" for family, r in results.items()]  # fmt: skip
    header = "| date | device | family | step-time ratio | peak-memory ratio | loop ms/step | framework ms/step |"
    out.with_suffix(".md").write_text("\n".join([header, "| --- " * 7 + "|", *rows]) + "\n")
    print(out)


if __name__ == "__main__":
    main()
