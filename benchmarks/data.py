"""The data pipeline's speed: tokenisation throughput with and without `num_proc`, and the dataloader's wait
as a share of step time for every shipped recipe that has local data.

1. Tokenisation. For each IMDB recipe (imdb_lstm: BPE, imdb_transformer: WordPiece) a tokenizer is trained
   the framework's way (`trainer.data.tokenizer.build_tokenizer`, the recipe's settings, on `--tokenizer-texts`
   training reviews), then `--texts` reviews of the IMDB train split are tokenised by the batched
   `datasets.map` that `cached_map` runs (same encode function as trainer/data/text.py, truncation to
   data.max_length, an Arrow cache file written), in three cases, each in a fresh process, in rotating order,
   `--repeats` times:
     - `num_proc=1`: what the framework does (it never passes `num_proc`); the tokenizers library's own
       thread pool (`encode_batch`) is on, as it is by default;
     - `num_proc=1, one thread`: the same with TOKENIZERS_PARALLELISM=false, the one-core baseline;
     - `num_proc=N` (`--num-proc`, default the machine's cores).
   Only the `map` call is timed (process pool start-up included, data set loading not). Reported: texts/s
   and tokens/s (tokens kept after truncation), median over repeats, and each case's ratio to `num_proc=1`.

2. Dataloader wait. Each recipe runs a short real `trainer.api.fit` in a fresh process, with the recipe's own
   model, batch size and loader settings (data.num_workers, pin_memory, ...; only the data are subsampled so
   that set-up takes seconds). Per step, a callback takes:
     - wait: from the moment Lightning's training loop asks its data fetcher for the next batch (the fetcher's
       `_start_profiler` hook, which Lightning 2.6 leaves a no-op in training) to `on_train_batch_start`, so the
       loader's `__next__` plus `convert_input` and `batch_to_device` (the host-to-device copy, if any);
     - step: from one `on_train_batch_start` to the next (device synchronised on a GPU);
     - gap: from `on_train_batch_end` to the next `on_train_batch_start`: the wait plus Lightning's bookkeeping
       between steps (metric logging, other callbacks' batch-end hooks, validation checks): an upper bound.
   The first `WARMUP` steps and any step with a validation or an epoch boundary in it are left out. Reported
   per recipe: the median over steps of wait / step (median over `--repeats` runs), the share of all
   counted step time spent waiting, and whether the median is under the 2% target.

    python benchmarks/data.py                                        # CPU: both parts, every recipe
    python benchmarks/data.py --parts wait --recipes mnist_cnn,imdb_lstm --steps 60
    python benchmarks/data.py --parts tokenise --texts 5000 --num-proc 4
    python benchmarks/data.py --parts wait --accelerator gpu --precision bf16-mixed --steps 200

Writes benchmarks/results/<date>-data-<device>.{json,md} and prints the JSON's path.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from record import machine, result_path, run_child

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
WARMUP = 5
TARGET_WAIT_SHARE = 0.02

# The recipes with local data, and how much of it each reads: enough for --steps steps without an epoch
# boundary, small enough that tokenizer training and tokenising take seconds. Batch sizes and loader settings stay
# the recipe's own. The CNNs keep their models; the sequence models are cut to what a 2-core CPU steps through in
# well under a second (as in overhead.py). A smaller model only shortens the step around the same fetch, so the
# wait's share it gives is an upper bound on the full model's on the same machine.
RECIPES: dict[str, list[str]] = {
    "mnist_cnn": [f"data.path={DATA / 'mnist'}", "data.max_train_samples=4096"],
    "digits_cnn": [],  # scikit-learn's digits: 1,293 training images, 40 batches an epoch
    "imdb_lstm": [f"data.path={DATA / 'imdb'}", "data.max_train_samples=2048", "data.max_length=128",
                  "data.tokenizer.vocab_size=2000", "model.bidirectional=false"],
    "imdb_transformer": [f"data.path={DATA / 'imdb'}", "data.max_train_samples=2048", "data.max_length=128",
                         "data.tokenizer.vocab_size=2000"],
    "shakespeare_gpt": [f"data.path={DATA / 'tiny_shakespeare'}", "model.n_layers=2", "data.block_size=64"],
    "shakespeare_lstm": [f"data.path={DATA / 'tiny_shakespeare'}", "model.num_layers=1", "data.block_size=64"],
}  # fmt: skip
TOKENISE_RECIPES = ("imdb_lstm", "imdb_transformer")  # the IMDB recipes: one BPE, one WordPiece tokenizer


# ----------------------------------------------------------------------------- tokenisation (child)


def _tokenise_child(args: argparse.Namespace) -> dict[str, Any]:
    """One timed `datasets.map` over the IMDB texts with a saved tokenizer, as cached_map runs it."""
    import datasets
    import pyarrow.compute as pc
    from tokenizers import Tokenizer

    datasets.disable_progress_bars()
    texts = _imdb_texts(args.texts)
    tokenizer = Tokenizer.from_file(args.tokenizer)
    # As TextClassificationDataModule.process (trainer/data/text.py) sets it up and encodes.
    tokenizer.no_padding()
    tokenizer.enable_truncation(args.max_length)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encodings = tokenizer.encode_batch(batch["text"])
        return {"input_ids": [e.ids for e in encodings], "labels": batch["label"]}

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = texts.map(
            encode,
            batched=True,
            num_proc=args.num_proc if args.num_proc > 1 else None,
            remove_columns=texts.column_names,
            cache_file_name=str(Path(tmp) / "tokenised.arrow"),
            new_fingerprint=f"bench-{args.num_proc}-{time.time_ns()}",  # never a cache hit
            load_from_cache_file=False,
        )
        seconds = time.perf_counter() - started
        tokens = pc.sum(pc.list_value_length(out.data.column("input_ids"))).as_py()
    return {"seconds": seconds, "texts": len(out), "tokens": tokens}


def _imdb_texts(count: int | None) -> Any:
    import datasets

    texts = datasets.load_dataset(str(DATA / "imdb"), split="train")
    return texts if count is None or count >= len(texts) else texts.select(range(count))


# ----------------------------------------------------------------------------- tokenisation (parent)


def _train_tokenizer(recipe: str, args: argparse.Namespace, folder: Path) -> tuple[Path, int]:
    """The recipe's tokenizer, trained as a run trains it; returns its file and the recipe's data.max_length."""
    from trainer import api
    from trainer.data.sources import load_splits
    from trainer.data.tokenizer import build_tokenizer

    words = [f"data.path={DATA / 'imdb'}", f"data.max_train_samples={args.tokenizer_texts}", "data.max_eval_samples=64",
             f"data.cache_dir={folder / 'cache'}", f"run_dir={folder / 'run'}"]  # fmt: skip
    cfg = api.resolve_fit_config(recipe, words)
    splits = load_splits(cfg.data, cfg.seed)
    tokenizer = build_tokenizer(cfg.data.tokenizer, splits.train, cfg.data.text_column, folder / "cache")
    path = folder / f"{recipe}-tokenizer.json"
    tokenizer.save(str(path))
    return path, cfg.data.max_length


def _tokenise_cases(num_proc: int) -> dict[str, tuple[int, bool]]:
    """Case name -> (num_proc, the tokenizers library's thread pool on)."""
    return {"num_proc=1": (1, True), "num_proc=1, one thread": (1, False), f"num_proc={num_proc}": (num_proc, True)}


def _run_tokenise(tokenizer: Path, max_length: int, procs: int, threads: bool, args: argparse.Namespace) -> dict:
    words = ["--child", "tokenise", "--tokenizer", str(tokenizer), "--max-length", str(max_length),
             "--child-num-proc", str(procs)]  # fmt: skip
    if args.texts is not None:
        words += ["--texts", str(args.texts)]
    env = {key: value for key, value in os.environ.items() if key != "TOKENIZERS_PARALLELISM"}
    if not threads:
        env["TOKENIZERS_PARALLELISM"] = "false"
    return run_child(__file__, words, env)


def tokenisation(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    _imdb_texts(args.texts)  # the Arrow conversion of the parquet files happens once, here, not in a timed child
    cases = _tokenise_cases(args.num_proc)
    results: dict[str, Any] = {}
    for recipe in TOKENISE_RECIPES:
        tokenizer, max_length = _train_tokenizer(recipe, args, workdir / "tokenise")
        runs: dict[str, list[dict]] = {case: [] for case in cases}
        names = list(cases)
        for repeat in range(args.repeats):
            for case in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotate the order
                runs[case].append(_run_tokenise(tokenizer, max_length, *cases[case], args))
                seconds = runs[case][-1]["seconds"]
                print(f"tokenise {recipe} {case} #{repeat + 1}: {seconds:.2f} s", file=sys.stderr)
        rows = {}
        for case, case_runs in runs.items():
            seconds = statistics.median(run["seconds"] for run in case_runs)
            first = case_runs[0]
            rows[case] = {"num_proc": cases[case][0], "tokenizer_threads": cases[case][1],
                          "seconds": round(seconds, 3), "texts_per_second": round(first["texts"] / seconds, 1),
                          "tokens_per_second": round(first["tokens"] / seconds), "texts": first["texts"],
                          "tokens": first["tokens"],
                          "all_seconds": [round(run["seconds"], 3) for run in case_runs]}  # fmt: skip
        baseline = rows["num_proc=1"]["seconds"]
        for row in rows.values():
            row["speedup_vs_num_proc_1"] = round(baseline / row["seconds"], 3)
        tokenizer_kind = json.loads(tokenizer.read_text())["model"]["type"]
        results[recipe] = {"tokenizer": tokenizer_kind, "max_length": max_length, "cases": rows}
    return results


def framework_num_proc() -> dict[str, bool]:
    """Whether the framework can tokenise with several processes: a config key, or cached_map passing one."""
    from trainer.config.schema import DataConfig
    from trainer.data.base import cached_map

    return {"data_config_has_num_proc": "num_proc" in DataConfig.model_fields,
            "cached_map_passes_num_proc": "num_proc" in inspect.getsource(cached_map)}  # fmt: skip


# ----------------------------------------------------------------------------- dataloader wait (child)


def _wait_child(args: argparse.Namespace) -> dict[str, Any]:
    import lightning as L

    from trainer import api

    class DataWaitClock(L.Callback):
        """Per step: when the loop asked for the batch, when the fetch returned, when the step began and ended."""

        def __init__(self) -> None:
            self.asked = self.fetched = 0.0
            self.starts: list[float] = []
            self.ends: list[float] = []
            self.waits: list[float] = []  # asked -> on_train_batch_start, per step
            self.loader: list[float] = []  # asked -> the loader returned, per step
            self.dirty: set[int] = set()  # i: the period from step i - 1 to step i holds a validation or epoch end

        def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
            # Lightning 2.6's training epoch loop hands these two methods to its data fetcher, which calls them
            # around each `next(loader)` (to profile "train_dataloader_next"); wrapped here they time the fetch.
            loop = trainer.fit_loop.epoch_loop
            before, after = loop._on_before_fetch, loop._on_after_fetch

            def asking() -> None:
                before()
                self.asked = time.perf_counter()

            def got() -> None:
                self.fetched = time.perf_counter()
                after()

            loop._on_before_fetch, loop._on_after_fetch = asking, got

        def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
            self.dirty.add(len(self.starts))

        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            _sync(trainer.strategy.root_device)  # the batch's copy to the device is part of the wait
            now = time.perf_counter()
            self.starts.append(now)
            self.waits.append(now - self.asked)
            self.loader.append(self.fetched - self.asked)

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            _sync(trainer.strategy.root_device)
            self.ends.append(time.perf_counter())

        def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
            self.dirty.add(len(self.starts))

    with tempfile.TemporaryDirectory() as tmp:
        words = [*RECIPES[args.recipe], f"trainer.max_steps={args.steps}", f"trainer.accelerator={args.accelerator}",
                 f"trainer.precision={args.precision}", "trainer.devices=1", "trainer.enable_progress_bar=false",
                 "data.max_eval_samples=64", "trainer.limit_val_batches=1", f"run_dir={Path(tmp) / 'run'}",
                 *args.overrides]  # fmt: skip
        cfg = api.resolve_fit_config(args.recipe, words)
        clock = DataWaitClock()
        api.fit(cfg, callbacks=[clock])
    if not clock.asked:
        raise SystemExit(f"lightning {L.__version__} no longer fetches through the epoch loop's _on_before_fetch; "
                         "find where its training loop calls next(data_fetcher) and time that instead")  # fmt: skip
    steps = [i for i in range(max(1, WARMUP), len(clock.starts)) if i not in clock.dirty]
    data = cfg.data
    return {
        "step_seconds": [clock.starts[i] - clock.starts[i - 1] for i in steps],
        "wait_seconds": [clock.waits[i] for i in steps],
        "loader_seconds": [clock.loader[i] for i in steps],
        "gap_seconds": [clock.starts[i] - clock.ends[i - 1] for i in steps],
        "loader_settings": {
            "micro_batch_size": data.micro_batch_size or data.global_batch_size,
            "num_workers": data.num_workers,
            "pin_memory": data.pin_memory,
            "persistent_workers": data.persistent_workers,
        },  # fmt: skip
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- dataloader wait (parent)


def dataloader_wait(recipe: str, args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for repeat in range(args.repeats):
        words = ["--child", "wait", "--recipe", recipe, "--steps", str(args.steps), "--accelerator", args.accelerator,
                 "--precision", args.precision, *args.overrides]  # fmt: skip
        run = run_child(__file__, words, {**os.environ, "TRAINER_CACHE": args.cache})
        shares = [w / s for w, s in zip(run["wait_seconds"], run["step_seconds"], strict=True)]
        run["median_wait_share"] = statistics.median(shares)
        run["total_wait_share"] = sum(run["wait_seconds"]) / sum(run["step_seconds"])
        run["median_gap_share"] = statistics.median(
            g / s for g, s in zip(run["gap_seconds"], run["step_seconds"], strict=True)
        )
        runs.append(run)
        print(f"wait {recipe} #{repeat + 1}: step {statistics.median(run['step_seconds']) * 1e3:.1f} ms, "
              f"wait {statistics.median(run['wait_seconds']) * 1e3:.2f} ms ({run['median_wait_share']:.2%}), "
              f"gap {statistics.median(run['gap_seconds']) * 1e3:.2f} ms", file=sys.stderr)  # fmt: skip

    def median_ms(key: str) -> float:
        return round(statistics.median(statistics.median(run[key]) for run in runs) * 1e3, 3)

    median_share = statistics.median(run["median_wait_share"] for run in runs)
    return {
        "overrides": [*RECIPES[recipe], *args.overrides],
        "loader_settings": runs[0]["loader_settings"],
        "steps_counted": [len(run["step_seconds"]) for run in runs],
        "step_ms": median_ms("step_seconds"),
        "wait_ms": median_ms("wait_seconds"),
        "loader_next_ms": median_ms("loader_seconds"),
        "gap_ms": median_ms("gap_seconds"),
        "median_wait_share": round(median_share, 5),
        "total_wait_share": round(statistics.median(run["total_wait_share"] for run in runs), 5),
        "median_gap_share": round(statistics.median(run["median_gap_share"] for run in runs), 5),
        "wait_shares_per_run": [round(run["median_wait_share"], 5) for run in runs],
        "meets_target": median_share < TARGET_WAIT_SHARE,
    }


# ----------------------------------------------------------------------------- common


def _markdown(record: dict[str, Any]) -> str:
    date, device = record["date"], record["device"]
    lines = []
    if "tokenisation" in record:
        lines += ["| date | device | recipe | tokenizer | case | texts/s | tokens/s | seconds | "
                  "speed-up vs num_proc=1 |", "| --- " * 9 + "|"]  # fmt: skip
        for recipe, result in record["tokenisation"].items():
            for case, row in result["cases"].items():
                lines.append(f"| {date} | {device} | {recipe} | {result['tokenizer']} | {case} | "
                             f"{row['texts_per_second']} | {row['tokens_per_second']} | {row['seconds']} | "
                             f"{row['speedup_vs_num_proc_1']} |")  # fmt: skip
        lines.append("")
    if "dataloader_wait" in record:
        lines += ["| date | device | recipe | step ms | wait ms | loader next ms | median wait share | "
                  "total wait share | hook gap share | < 2% |", "| --- " * 10 + "|"]  # fmt: skip
        for recipe, r in record["dataloader_wait"].items():
            lines.append(f"| {date} | {device} | {recipe} | {r['step_ms']} | {r['wait_ms']} | {r['loader_next_ms']} | "
                         f"{r['median_wait_share']:.2%} | {r['total_wait_share']:.2%} | {r['median_gap_share']:.2%} | "
                         f"{'yes' if r['meets_target'] else 'no'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="tokenise,wait", help="tokenise, wait or both")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="recipes whose dataloader wait is measured")
    parser.add_argument("--steps", type=int, default=40, help="training steps per dataloader-wait run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tokenisation case and per recipe")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="num_proc of the parallel case")
    parser.add_argument("--texts", type=int, help="IMDB train reviews to tokenise (default all 25,000)")
    parser.add_argument("--tokenizer-texts", type=int, default=5000, help="reviews the tokenizers are trained on")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("overrides", nargs="*", help="extra key=value words for every dataloader-wait run")
    parser.add_argument("--child", choices=["tokenise", "wait"], help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-num-proc", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the result files")
    args = parser.parse_args()
    if args.child == "tokenise":
        args.num_proc = args.child_num_proc
        print(json.dumps(_tokenise_child(args)))
        return
    if args.child == "wait":
        print(json.dumps(_wait_child(args)))
        return
    parts = set(args.parts.split(","))
    if not parts or parts - {"tokenise", "wait"}:
        parser.error(f"--parts takes tokenise, wait or both, not {args.parts!r}")
    unknown = set(args.recipes.split(",")) - set(RECIPES)
    if unknown:
        parser.error(f"no local data for {sorted(unknown)}; choose from {list(RECIPES)} (cifar10 and fashion-mnist "
                     "have no local copy)")  # fmt: skip
    if args.steps <= WARMUP + 2:
        parser.error(f"--steps must be more than {WARMUP + 2}: the first {WARMUP} are warm-up")
    if args.num_proc < 2:
        parser.error("--num-proc must be 2 or more: 1 is the baseline every run has")

    try:  # before the measuring: an unwritable folder fails at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot write results into {str(args.out)!r}: {err.strerror}")
    load_at_start = round(os.getloadavg()[0], 2)
    date = datetime.date.today().isoformat()
    record: dict[str, Any] = {"date": date, **machine(args.accelerator), "warmup_steps": WARMUP,
                              "repeats": args.repeats, "targets": {"median_wait_share": TARGET_WAIT_SHARE}}  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        if "tokenise" in parts:
            record["framework_num_proc"] = framework_num_proc()
            record["tokenisation_texts"] = args.texts or "all"
            record["tokenizer_training_texts"] = args.tokenizer_texts
            record["tokenisation"] = tokenisation(args, Path(workdir))
        if "wait" in parts:
            args.cache = str(Path(workdir) / "cache")  # the repeats of a recipe reuse its tokenised data
            record.update(steps=args.steps, precision=args.precision)
            record["dataloader_wait"] = {recipe: dataloader_wait(recipe, args) for recipe in args.recipes.split(",")}
    # The machine is shared: the load on either side of the measurement says how much to trust it.
    record["load_average_1min"] = {"start": load_at_start, "end": round(os.getloadavg()[0], 2)}
    out = result_path(args.out, "data", record)
    out.write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(record))
    print(out)


if __name__ == "__main__":
    main()
