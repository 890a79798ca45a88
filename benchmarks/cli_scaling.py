"""How the commands that read run folders scale with what they read: `trainer runs` over 10x and 100x today's
number of runs, the report's curves over 10x and 100x today's metrics.csv, and a recipe far past any real
one. Each case is timed in this process against the smallest size of its kind (the baseline): a cost that
grows gently has a per-item ratio near 1 (linear) or below (sublinear).

    python benchmarks/cli_scaling.py [--out benchmarks/results] [--sizes small]

The runs are synthetic (the files `trainer fit` writes, with a shipped recipe's config): listing reads
files only, never a model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Today's sizes (the catalogue of issue 20): 300 runs, a 10,000-step run; then 10x and 100x.
SIZES = {"full": {"runs": [300, 3_000, 30_000], "steps": [10_000, 100_000, 1_000_000]},
         "small": {"runs": [30, 300], "steps": [1_000, 10_000]}}  # fmt: skip
RECIPE_BYTES = [2_000, 38 * 2**20]  # a shipped recipe's size, and the 38 MB one of the catalogue


def best_of(repeats: int, work: Callable[[], Any]) -> float:
    """The fastest of `repeats` timings, in seconds: the least disturbed by the machine's other work."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def write_metrics(path: Path, steps: int) -> None:
    """A metrics.csv as a long run writes it: the learning rate and loss every step, a validation every 1,000."""
    rng = random.Random(0)
    with open(path, "w") as file:
        file.write("step,lr-AdamW/pg1,lr-AdamW/pg2,train/loss,train/acc,epoch,val/loss,val/acc\n")
        for step in range(steps):
            file.write(f"{step},0.001,0.001,,,,,\n{step},,,{rng.random():.6f},{rng.random():.6f},0,,\n")
            if step % 1000 == 999:
                file.write(f"{step},,,,,0,{rng.random():.6f},{rng.random():.6f}\n")


def make_runs(root: Path, count: int, template: Path) -> None:
    for index in range(count):
        run = root / "digits_cnn" / f"20261203-{index:06d}"
        run.mkdir(parents=True)
        for name in ("config.yaml", "summary.json", "metrics.csv"):
            (run / name).write_bytes((template / name).read_bytes())


def template_run(folder: Path) -> Path:
    from trainer.config import load_config, to_yaml

    folder.mkdir()
    (folder / "config.yaml").write_text(to_yaml(load_config("digits_cnn", [])))
    summary = {
        "recipe": "digits_cnn",
        "global_step": 500,
        "wall_seconds": 60.0,
        "stopped_by": None,
        "val": {"val/acc": 0.9},
        "best_score": 0.9,
        "best_checkpoint": "checkpoints/epoch0-step500.ckpt",
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    write_metrics(folder / "metrics.csv", 500)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--sizes", choices=list(SIZES), default="full")
    args = parser.parse_args()
    from trainer.config import load_config
    from trainer.errors import UserError
    from trainer.report.plots import curve_figures, save_png
    from trainer.report.run_files import read_metrics
    from trainer.report.runs import list_runs

    sizes = SIZES[args.sizes]
    cases: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="cli-scaling-"))
    try:
        template = template_run(work / "template")
        for count in sizes["runs"]:
            root = work / f"runs-{count}"
            make_runs(root, count, template)
            seconds = best_of(3 if count < 10_000 else 1, lambda root=root: list_runs(root))
            cases.append({"case": "trainer runs", "size": count, "unit": "runs", "seconds": seconds})
            shutil.rmtree(root)
        for steps in sizes["steps"]:
            run = work / f"steps-{steps}"
            run.mkdir()
            write_metrics(run / "metrics.csv", steps)

            def curves(run: Path = run) -> None:
                for name, figure in curve_figures(read_metrics(run / "metrics.csv")).items():
                    save_png(figure, run / f"{name}.png")

            repeats = 2 if steps < 1_000_000 else 1
            cases.append({"case": "report curves", "size": steps, "unit": "steps", "seconds": best_of(repeats, curves)})
        for size in RECIPE_BYTES:
            recipe = work / f"recipe-{size}.yaml"
            recipe.write_text("inherits: digits_cnn\ndescription: " + "x" * (size - 40) + "\n")

            def load(recipe: Path = recipe) -> None:
                with contextlib.suppress(UserError):  # the big one is refused: the time to say so is measured
                    load_config(str(recipe), [])

            cases.append({"case": "recipe", "size": size, "unit": "bytes", "seconds": best_of(3, load)})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for case in cases:
        baseline = next(c for c in cases if c["case"] == case["case"])
        # Seconds per item against the smallest size's: 1.0 is linear growth, below 1 sublinear.
        case["per_item_ratio"] = (case["seconds"] / case["size"]) / (baseline["seconds"] / baseline["size"])
        case["ratio"] = case["seconds"] / baseline["seconds"]
        rows.append([case["case"], f"{case['size']:,} {case['unit']}", f"{case['seconds']:.3f}",
                     f"{case['ratio']:.2f}", f"{case['per_item_ratio']:.3f}"])  # fmt: skip
    from record import machine

    record = {**machine("cpu"), "cases": cases}
    out = write_results(args.out, "cli-scaling", record,
                        ["case", "size", "seconds", "x smallest", "per item x smallest"], rows)  # fmt: skip
    print(out)


if __name__ == "__main__":
    main()
