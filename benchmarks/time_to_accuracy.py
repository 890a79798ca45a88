"""Wall time of training to a test accuracy (99% on MNIST by default): the framework and a plain loop.

Both sides train the `mnist_cnn` recipe's model on the same tensors with the same optimizer and schedule,
evaluate on the whole MNIST test split every `--eval-every` batches of an epoch (the count restarts with each
epoch, as Lightning 2.6 counts `val_check_interval` here), and stop at the first evaluation that reaches
`--target`. Training time counts the training steps only (data loading included),
not the evaluations: the framework's is `summary.json`'s `train_seconds`, the loop's is timed the same way.
Each side runs in its own process, in alternating order, `--pairs` times.

Both follow one trajectory: the loop takes the framework's sample order (plain_loop.py) and both seed dropout
at the first step, so they reach the target at the same step and the ratio is what a step costs each; the
accuracy at every evaluation is recorded to show it. Without that, two shuffles reached 99% 10% of the steps
apart, which is noise, not overhead. The framework keeps freed host memory in the process
(`performance.reuse_host_memory`, on by default), and the loop runs with malloc's defaults, as a loop written
by hand does: on a CPU that decides most of a step's cost (trainer/host_memory.py).

    python benchmarks/time_to_accuracy.py                                   # CPU
    python benchmarks/time_to_accuracy.py --accelerator gpu --precision bf16-mixed \\
        data.global_batch_size=512 optim.lr=4e-3 performance.channels_last=true

Extra `key=value` words change the recipe on both sides. Writes
benchmarks/results/<date>-time-to-accuracy-<cpu|gpu>.{json,md} and prints the JSON's path.
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

from record import machine, run_child, write_results

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
RECIPE = "mnist_cnn"


def _config(args: argparse.Namespace, run_dir: Path) -> Any:
    from trainer import api

    words = [f"data.path={DATA / 'mnist'}", "data.val_split=test", "data.test_split=null",
             f"trainer.accelerator={args.accelerator}", f"trainer.precision={args.precision}", "trainer.devices=1",
             f"trainer.val_check_interval={args.eval_every}", "trainer.check_val_every_n_epoch=null",
             f"trainer.max_epochs={args.max_epochs}", "trainer.enable_progress_bar=false",
             "checkpoint.save_top_k=0", f"run_dir={run_dir}", *args.overrides]  # fmt: skip
    return api.resolve_fit_config(RECIPE, words)


def _framework(cfg: Any, target: float) -> dict[str, Any]:
    import lightning as L
    import torch

    from trainer import api

    class StopAtTarget(L.Callback):
        def __init__(self) -> None:
            self.reached: float | None = None
            self.curve: list[float] = []  # the accuracy at each evaluation

        def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
            if trainer.global_step == 0:
                torch.manual_seed(cfg.seed)  # dropout's stream from here on, as the loop's (see _plain)

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            accuracy = float(trainer.callback_metrics["val/acc"])
            self.curve.append(round(accuracy, 4))
            if accuracy >= target and self.reached is None:
                self.reached = accuracy
                trainer.should_stop = True

    stop = StopAtTarget()
    summary = api.fit(cfg, callbacks=[stop])
    return {
        "train_seconds": summary["train_seconds"],
        "steps": summary["global_step"],
        "accuracy": stop.reached,
        "curve": stop.curve,
    }


def _plain(cfg: Any, target: float, eval_every: int) -> dict[str, Any]:
    import torch
    from plain_loop import PlainLoop

    loop = PlainLoop.build(cfg)
    steps_per_epoch = -(-len(loop.datamodule.train_set) // loop.datamodule.micro_batch_size)
    max_steps = steps_per_epoch * cfg.trainer.max_epochs
    train_seconds, steps, accuracy, curve = 0.0, 0, None, []
    batches = loop.batches()
    # Both sides train on the same batches (plain_loop's order is the framework's) and draw dropout from the
    # same stream, seeded at the first step: they follow one trajectory, and the steps to the target match.
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    while steps < max_steps:
        loop.step(next(batches))
        steps += 1
        if ((steps - 1) % steps_per_epoch + 1) % eval_every == 0 or steps == max_steps:
            loop.sync()
            train_seconds += time.perf_counter() - started
            score = loop.accuracy(loop.datamodule.val_set)
            curve.append(round(score, 4))
            if score >= target:
                accuracy = score
                break
            started = time.perf_counter()
    return {"train_seconds": train_seconds, "steps": steps, "accuracy": accuracy, "curve": curve}


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args, Path(tmp) / "run")
        if args.child == "framework":
            result = _framework(cfg, args.target)
        else:
            result = _plain(cfg, args.target, args.eval_every)
    print(json.dumps(result))


def _measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    words = ["--child", variant, "--accelerator", args.accelerator, "--precision", args.precision, "--target",
             str(args.target), "--eval-every", str(args.eval_every), "--max-epochs", str(args.max_epochs),
             *args.overrides]  # fmt: skip
    return run_child(__file__, words, {**os.environ, "TRAINER_CACHE": args.cache})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--eval-every", type=int, default=100, help="batches of an epoch between evaluations")
    parser.add_argument("--max-epochs", type=int, default=3, help="give up after this many epochs")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result files")
    parser.add_argument("--child", choices=["loop", "framework"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value words for the recipe, on both sides")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    if not 0 < args.target <= 1:
        parser.error("--target is an accuracy: more than 0, at most 1")
    if min(args.eval_every, args.max_epochs, args.pairs) < 1:
        parser.error("--eval-every, --max-epochs and --pairs must be 1 or more")
    try:  # before the measuring: an unwritable folder fails at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot write results into {str(args.out)!r}: {err.strerror}")

    runs: dict[str, list[dict[str, Any]]] = {"loop": [], "framework": []}
    with tempfile.TemporaryDirectory() as cache:
        args.cache = cache  # both sides read the same prepared tensors
        for pair in range(args.pairs):
            for variant in ("loop", "framework") if pair % 2 == 0 else ("framework", "loop"):
                runs[variant].append(_measure(variant, args))
                print(f"{variant}: {runs[variant][-1]}", file=sys.stderr)
    median = {v: statistics.median(r["train_seconds"] for r in rs) for v, rs in runs.items()}
    # The time ratio is the product of two: how many steps each side needed, and what a step cost it.
    step_ms = {v: statistics.median(1e3 * r["train_seconds"] / r["steps"] for r in rs) for v, rs in runs.items()}
    reached = all(r["accuracy"] is not None for rs in runs.values() for r in rs)
    record = {**machine(args.accelerator), "recipe": RECIPE, "target_accuracy": args.target,
              "precision": args.precision, "eval_every": args.eval_every, "overrides": args.overrides,
              "reached_target": reached, "loop_train_seconds": round(median["loop"], 3),
              "framework_train_seconds": round(median["framework"], 3),
              "time_ratio": round(median["framework"] / median["loop"], 4),
              "loop_step_ms": round(step_ms["loop"], 2), "framework_step_ms": round(step_ms["framework"], 2),
              "step_time_ratio": round(step_ms["framework"] / step_ms["loop"], 4), "runs": runs}  # fmt: skip
    steps = {v: [r["steps"] for r in rs] for v, rs in runs.items()}
    header = ["date", "device", "target", "loop s", "framework s", "ratio", "steps (loop / framework)",
              "ms/step (loop / framework)", "step-time ratio", "settings"]  # fmt: skip
    row = [record["date"], record["device"], args.target, record["loop_train_seconds"],
           record["framework_train_seconds"], record["time_ratio"], f"{steps['loop']} / {steps['framework']}",
           f"{record['loop_step_ms']} / {record['framework_step_ms']}", record["step_time_ratio"],
           f"{args.precision} {' '.join(args.overrides)}"]  # fmt: skip
    out = write_results(args.out, "time-to-accuracy", record, header, [row])
    print(out)


if __name__ == "__main__":
    main()
