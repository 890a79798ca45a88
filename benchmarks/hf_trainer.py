"""Fine-tuning the same BERT-style encoder on the same IMDB reviews with `trainer` and with Hugging Face's
`Trainer`: samples per second and peak memory, as ratios (trainer / HF) in one run.

Both sides start from the same pretrained folder (benchmarks/own_models.py builds a BERT-mini-shaped one: no
hub is reachable), tokenise with its tokenizer.json to the same maximum length, pad each batch to its
longest, and take the same number of AdamW steps of the same batch size, with no evaluation or checkpoint in
between. A step's time is taken between the ends of consecutive optimizer steps (after a device sync on a
GPU), the first WARMUP left out; samples per second is the batch over the median step. Each side runs alone
in a fresh process, alternating `--pairs` times; peak memory is the process's peak RSS on a CPU (both import
both libraries first) and CUDA's peak allocation on a GPU. HF's Trainer needs `accelerate`.

    python benchmarks/hf_trainer.py                                   # CPU
    python benchmarks/hf_trainer.py --accelerator gpu --precision bf16-mixed --steps 100 --batch 64

Writes benchmarks/results/<date>-hf-trainer-<device>.{json,md} and prints the JSON's path.
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

from own_models import bert_folder, imdb_texts
from record import machine, peak_memory, run_child, write_results

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
WARMUP = 5


def _sync(accelerator: str) -> float:
    if accelerator == "gpu":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def _trainer_side(args: argparse.Namespace) -> list[float]:
    import lightning as L

    from trainer import api

    recipe = Path(args.work) / "bert_imdb.yaml"
    recipe.write_text(
        "# trainer fit bert_imdb.yaml\ntask: text_classification\n"
        f"model: {{family: huggingface, pretrained: {Path(args.work) / 'bert'}}}\n"
        f"data: {{path: {DATA / 'imdb'}, max_length: {args.max_length}, global_batch_size: {args.batch}, "
        f"max_train_samples: {args.samples}, max_eval_samples: {args.batch}}}\n"
        "optim: {lr: 2.0e-5, weight_decay: 0.0}\n"
        f"trainer: {{max_steps: {args.steps}, limit_val_batches: 1, enable_progress_bar: false, "
        f"accelerator: {args.accelerator}, precision: {args.precision}, devices: 1}}\n"
    )
    ends: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *unused: Any) -> None:
            ends.append(_sync(args.accelerator))

    api.fit(api.resolve_fit_config(str(recipe), [f"run_dir={Path(args.work) / f'run-{os.getpid()}'}",
                                                 "data.test_split=null"]), callbacks=[Clock()])  # fmt: skip
    return ends


def _hf_side(args: argparse.Namespace) -> list[float]:
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        PreTrainedTokenizerFast,
        Trainer,  # fmt: skip
        TrainerCallback,
        TrainingArguments,
    )

    folder = Path(args.work) / "bert"
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="[PAD]",
                                        unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")  # fmt: skip
    train = datasets.load_dataset(str(DATA / "imdb"), split="train").shuffle(seed=42).select(range(args.samples))
    train = train.map(lambda b: tokenizer(b["text"], truncation=True, max_length=args.max_length), batched=True,
                      remove_columns=["text"])  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=2)
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *unused: Any, **kwargs: Any) -> None:
            ends.append(_sync(args.accelerator))

    training = TrainingArguments(
        output_dir=str(Path(args.work) / f"hf-{os.getpid()}"), per_device_train_batch_size=args.batch,
        max_steps=args.steps, learning_rate=2e-5, weight_decay=0.0, lr_scheduler_type="constant",
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], dataloader_num_workers=0,
        use_cpu=args.accelerator == "cpu", bf16=args.precision.startswith("bf16"), disable_tqdm=True, seed=42,
    )  # fmt: skip
    Trainer(model=model, args=training, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=[Clock()]).train()  # fmt: skip
    return ends


def child(args: argparse.Namespace) -> None:
    import transformers  # noqa: F401 - both sides import both libraries before memory is counted

    import trainer.api  # noqa: F401

    ends = (_trainer_side if args.child == "trainer" else _hf_side)(args)
    steps = [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)][WARMUP:]
    print(json.dumps({"median_step_s": statistics.median(steps), "peak_memory_bytes": peak_memory(args.accelerator)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--child", choices=["trainer", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.steps <= WARMUP + 2:
        parser.error(f"--steps must be more than {WARMUP + 2}: the first {WARMUP} are warm-up")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        bert_folder(Path(work) / "bert", imdb_texts(DATA))
        words = ["--work", work, "--steps", str(args.steps), "--batch", str(args.batch), "--max-length",
                 str(args.max_length), "--samples", str(args.samples), "--accelerator", args.accelerator,
                 "--precision", args.precision]  # fmt: skip
        env = {**os.environ, "TRAINER_CACHE": str(Path(work) / "cache")}
        speed, memory = [], []
        for pair in range(args.pairs):
            order = ("trainer", "hf") if pair % 2 == 0 else ("hf", "trainer")
            got = {side: run_child(__file__, ["--child", side, *words], env) for side in order}
            speed.append(got["hf"]["median_step_s"] / got["trainer"]["median_step_s"])  # samples/s: trainer / HF
            memory.append(got["trainer"]["peak_memory_bytes"] / got["hf"]["peak_memory_bytes"])
            print(f"pair {pair + 1}: samples/s ratio {speed[-1]:.3f}, peak memory ratio {memory[-1]:.3f} "
                  f"(trainer {args.batch / got['trainer']['median_step_s']:.1f} samples/s, "
                  f"HF {args.batch / got['hf']['median_step_s']:.1f})", file=sys.stderr)  # fmt: skip
    record = {**machine(args.accelerator), "steps": args.steps, "batch": args.batch, "max_length": args.max_length,
              "pairs": args.pairs, "precision": args.precision,
              "samples_per_second_ratio": round(statistics.median(speed), 4),
              "peak_memory_ratio": round(statistics.median(memory), 4),
              "samples_per_second_ratios": [round(r, 4) for r in speed],
              "peak_memory_ratios": [round(r, 4) for r in memory]}  # fmt: skip
    header = ["date", "device", "samples/s trainer / HF", "peak memory trainer / HF"]
    rows = [[record["date"], record["device"], record["samples_per_second_ratio"], record["peak_memory_ratio"]]]
    print(write_results(args.out, "hf-trainer", record, header, rows))


if __name__ == "__main__":
    main()
