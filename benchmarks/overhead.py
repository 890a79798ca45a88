"""What the framework costs over a hand-written PyTorch loop: step time and peak memory, per model family.

For each family the same model class, data, batch, optimizer, learning-rate schedule, clipping, precision
and step count run (a) in a plain loop (benchmarks/plain_loop.py) and (b) through `trainer.api.fit`.

Step time is measured interleaved, in one process: after each of the framework's optimizer steps, a
callback runs one step of the plain loop (its own copy of the model and data). The framework's step is
timed from the end of that loop step to the end of its own next step, so it includes everything Lightning
and the framework do between steps (data fetch, hooks, logging, checkpoint decisions); the loop's step
from its data fetch to the end of its optimizer step. Both see the same machine at the same moment, which
makes the ratio robust on shared, noisy machines; each process gives the ratio of the two medians, and
the reported figure is the median over `--pairs` processes. On a GPU every timestamp follows a device sync.
The first WARMUP steps and any step with a validation in it are left out.

Peak memory cannot be shared that way: the framework and the loop each run alone in a fresh process,
alternating, `--memory-pairs` times (CUDA's peak allocation on a GPU, the process's peak RSS on a CPU;
both sides import the same libraries first, so the RSS compares what training adds).

    python benchmarks/overhead.py                                    # CPU, every family
    python benchmarks/overhead.py --accelerator gpu --precision bf16-mixed --steps 200

Writes benchmarks/results/<date>-overhead-<device>.{json,md} and prints the JSON's path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from own_models import bert_recipe, custom_recipe
from record import machine, peak_memory, run_child, write_results

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
WARMUP = 5

# Each family's recipe, at a size a 2-core CPU runs in seconds (the GPU run passes its own with --size full).
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "cnn": ("mnist_cnn", [f"data.path={DATA / 'mnist'}", "data.max_train_samples=4096"]),
    "lstm": ("imdb_lstm", [f"data.path={DATA / 'imdb'}", "data.max_train_samples=2048", "data.max_length=64",
                           "data.tokenizer.vocab_size=2000", "data.global_batch_size=32"]),
    "transformer": ("imdb_transformer", [f"data.path={DATA / 'imdb'}", "data.max_train_samples=2048",
                                         "data.max_length=128", "data.tokenizer.vocab_size=2000"]),
    "gpt": ("shakespeare_gpt", [f"data.path={DATA / 'tiny_shakespeare'}", "model.n_layers=2", "data.block_size=64"]),
    # A user's own nn.Module (benchmarks/own_models.py) and a pretrained BERT-style encoder (BERT-mini's shape),
    # their recipes written into the run's cache folder.
    "custom": ("custom_resnet", ["data.max_train_samples=4096"]),
    "pretrained": ("pretrained_bert", ["data.max_train_samples=2048"]),
}  # fmt: skip


# ----------------------------------------------------------------------------- one measured run (child)


def _config(family: str, args: argparse.Namespace, run_dir: Path) -> Any:
    from trainer import api

    recipe, words = FAMILIES[family]
    if family == "custom":
        recipe = str(custom_recipe(Path(args.cache), DATA / "mnist"))
    elif family == "pretrained":
        recipe = str(bert_recipe(Path(args.cache), DATA))
    words = [*words, f"trainer.max_steps={args.steps}", f"trainer.accelerator={args.accelerator}",
             f"trainer.precision={args.precision}", "trainer.devices=1", "trainer.enable_progress_bar=false",
             "data.max_eval_samples=64", "trainer.limit_val_batches=1", f"run_dir={run_dir}"]  # fmt: skip
    return api.resolve_fit_config(recipe, words)


class _Clock:
    """Timestamps after a device sync."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def now(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _interleaved(cfg: Any) -> dict[str, list[float]]:
    """Framework and loop step times, one loop step after each framework step (see the docstring)."""
    import lightning as L
    from plain_loop import PlainLoop

    from trainer import api

    loop = PlainLoop.build(cfg)
    batches = loop.batches()
    clock = _Clock(loop.device)

    class Interleave(L.Callback):
        def __init__(self) -> None:
            self.framework: list[float] = []
            self.loop: list[float] = []
            self._mark: float | None = None  # when the framework's current step began
            self._validated = False

        def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
            self._validated = True

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            end = clock.now()
            if self._mark is not None and not self._validated:
                self.framework.append(end - self._mark)
            self._validated = False
            start = clock.now()
            loop.step(next(batches))
            self._mark = clock.now()
            self.loop.append(self._mark - start)

    interleave = Interleave()
    api.fit(cfg, callbacks=[interleave])
    return {"framework": interleave.framework[WARMUP:], "loop": interleave.loop[WARMUP:]}


def _alone(cfg: Any, variant: str) -> None:
    """One side on its own, for its peak memory."""
    if variant == "framework":
        from trainer import api

        api.fit(cfg)
        return
    from plain_loop import PlainLoop

    loop = PlainLoop.build(cfg)
    batches = loop.batches()
    for _ in range(cfg.trainer.max_steps):
        loop.step(next(batches))


def child(args: argparse.Namespace) -> None:
    import trainer.api  # noqa: F401 - every side imports the same libraries before memory is counted

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args.family, args, Path(tmp) / "run")
        if args.child == "interleaved":
            print(json.dumps(_interleaved(cfg)))
            return
        _alone(cfg, args.child)
    print(json.dumps({"peak_memory_bytes": peak_memory(args.accelerator)}))


# ----------------------------------------------------------------------------- the comparison (parent)


def _measure(variant: str, family: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    words = ["--child", variant, "--family", family, "--steps", str(steps), "--accelerator", args.accelerator,
             "--precision", args.precision, "--cache", args.cache]  # fmt: skip
    return run_child(__file__, words, {**os.environ, "TRAINER_CACHE": args.cache})


def compare(family: str, args: argparse.Namespace) -> dict[str, Any]:
    time_ratios, loop_steps, framework_steps, memory_ratios = [], [], [], []
    for pair in range(args.pairs):
        steps = _measure("interleaved", family, args, args.steps)
        loop, framework = statistics.median(steps["loop"]), statistics.median(steps["framework"])
        time_ratios.append(framework / loop)
        loop_steps.append(loop)
        framework_steps.append(framework)
        print(f"{family} {pair + 1}: step {framework * 1e3:.2f} ms vs {loop * 1e3:.2f} ms ({time_ratios[-1]:.3f})",
              file=sys.stderr)  # fmt: skip
    for pair in range(args.memory_pairs):
        order = ("loop", "framework") if pair % 2 == 0 else ("framework", "loop")
        peaks = {variant: _measure(variant, family, args, args.memory_steps)["peak_memory_bytes"] for variant in order}
        memory_ratios.append(peaks["framework"] / peaks["loop"])
        print(f"{family} memory {pair + 1}: {memory_ratios[-1]:.3f}", file=sys.stderr)
    return {
        "recipe": FAMILIES[family][0],
        "median_step_time_ratio": round(statistics.median(time_ratios), 4),
        "peak_memory_ratio": round(statistics.median(memory_ratios), 4),
        "loop_step_ms": round(statistics.median(loop_steps) * 1e3, 3),
        "framework_step_ms": round(statistics.median(framework_steps) * 1e3, 3),
        "step_time_ratios": [round(r, 4) for r in time_ratios],
        "memory_ratios": [round(r, 4) for r in memory_ratios],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=5, help="interleaved processes (step time)")
    parser.add_argument("--memory-pairs", type=int, default=3, help="alternating lone runs (peak memory)")
    parser.add_argument("--memory-steps", type=int, default=15)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result files")
    parser.add_argument("--child", choices=["interleaved", "loop", "framework"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.steps <= WARMUP + 2:
        parser.error(f"--steps must be more than {WARMUP + 2}: the first {WARMUP} are warm-up")
    unknown = set(args.families.split(",")) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    if args.pairs < 1 or args.memory_pairs < 1:
        parser.error("--pairs and --memory-pairs must be 1 or more")
    try:  # before the measuring: an unwritable folder fails at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot write results into {str(args.out)!r}: {err.strerror}")

    with tempfile.TemporaryDirectory() as cache:
        args.cache = cache  # one tokenised-data cache for every run: both sides read the same tensors
        if "pretrained" in args.families.split(","):
            bert_recipe(Path(cache), DATA)  # the pretrained folder, built once before anything is measured
        results = {family: compare(family, args) for family in args.families.split(",")}
    record = {**machine(args.accelerator), "steps": args.steps, "pairs": args.pairs,
              "memory_pairs": args.memory_pairs, "precision": args.precision,
              "targets": {"median_step_time_ratio": 1.02, "peak_memory_ratio": 1.05},
              "results": results}  # fmt: skip
    header = ["date", "device", "family", "step-time ratio", "peak-memory ratio", "loop ms/step", "framework ms/step"]
    rows = [[record["date"], record["device"], family, r["median_step_time_ratio"], r["peak_memory_ratio"],
             r["loop_step_ms"], r["framework_step_ms"]] for family, r in results.items()]  # fmt: skip
    out = write_results(args.out, "overhead", record, header, rows)
    print(out)


if __name__ == "__main__":
    main()
