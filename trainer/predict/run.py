"""Predictions for a list of inputs: labels with probabilities for classifiers, continuations for language
models. Sampling is done here in numpy, the same for every backend, so that an ONNX export and the
checkpoint it came from give the same text for the same seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import UserError
from trainer.predict import inputs
from trainer.predict.backends import Loaded, load

# trainer.models.generate's floor, kept apart: models/ is torch, and predicting from ONNX imports no torch.
MIN_TEMPERATURE = 1e-6


@dataclass(frozen=True)
class Options:
    batch_size: int = 32
    top_k: int | None = None  # classifiers: the k best labels; language models: sample among the k likeliest
    temperature: float = 1.0  # 0: greedy
    max_new_tokens: int = 200
    seed: int = 0
    ckpt: str | None = None


def predict(path: Path, words: list[str], options: Options) -> list[dict[str, Any]]:
    """One result per input, in order (a folder of images or a text file counts as its members)."""
    loaded = load(path, options.ckpt)
    kind = loaded.model_io.preprocess["kind"]
    if kind == "image":
        return _classify(loaded, inputs.expand_images(words), options)
    if kind == "text":
        return _classify(loaded, inputs.expand_texts(words), options)
    if kind == "prompt":
        return [_continue(loaded, prompt, options) for prompt in words]
    raise UserError(f"{loaded.source} takes inputs of kind {kind!r}, which this version cannot make; export again")


def _classify(loaded: Loaded, items: list[str], options: Options) -> list[dict[str, Any]]:
    model_io = loaded.model_io
    labels = model_io.labels or []
    k = min(options.top_k or 1, len(labels))
    tokenizer = _tokenizer(loaded) if model_io.preprocess["kind"] == "text" else None
    results = []
    for start in range(0, len(items), options.batch_size):
        chunk = items[start : start + options.batch_size]
        if tokenizer is None:
            batch = {model_io.inputs[0].name: inputs.image_batch(chunk, model_io.preprocess)}
        else:
            batch = inputs.text_batch(tokenizer, chunk, model_io.preprocess)
        probabilities = _softmax(loaded.run(batch))
        for item, row in zip(chunk, probabilities, strict=True):
            best = np.argsort(-row, kind="stable")[:k]
            top = [{"label": labels[i], "index": int(i), "probability": round(float(row[i]), 6)} for i in best]
            results.append({"input": item, **top[0], "top_k": top})
    return results


def _continue(loaded: Loaded, prompt: str, options: Options) -> dict[str, Any]:
    pre = loaded.model_io.preprocess
    tokenizer = _tokenizer(loaded)
    ids, dropped = inputs.prompt_ids(tokenizer, prompt)
    generator = np.random.default_rng(options.seed)
    new: list[int] = []
    for _ in range(options.max_new_tokens):
        context = np.asarray([(ids + new)[-pre["context_length"] :]], dtype=np.int64)
        logits = loaded.run({"input_ids": context})[0, -1].astype(np.float64)
        new.append(_next_token(logits, pre["suppress_ids"], options, generator))
    return {"prompt": prompt, "text": tokenizer.decode(ids + new), "generated": tokenizer.decode(new),
            "dropped": dropped}  # fmt: skip


def _tokenizer(loaded: Loaded) -> Any:
    """The export's tokenizer, which must be the model's: ids beyond its vocabulary would fail in the graph."""
    tokenizer = inputs.load_tokenizer(loaded.tokenizer_path)
    expected = loaded.model_io.preprocess.get("vocab_size")
    if expected is not None and tokenizer.get_vocab_size() != expected:
        raise UserError(f"{loaded.source}'s tokenizer.json has {tokenizer.get_vocab_size()} tokens but the model "
                        f"{expected}: it is another run's; export the run again")  # fmt: skip
    return tokenizer


def _next_token(logits: np.ndarray, suppress: list[int], options: Options, generator: np.random.Generator) -> int:
    logits[suppress] = -np.inf  # padding and the unknown token carry no text
    if options.temperature == 0:
        return int(np.argmax(logits))
    if options.top_k is not None and options.top_k < logits.size:
        kth = np.partition(logits, -options.top_k)[-options.top_k]
        logits[logits < kth] = -np.inf
    probabilities = _softmax((logits - logits.max()) / max(options.temperature, MIN_TEMPERATURE))
    return int(generator.choice(logits.size, p=probabilities))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def render(result: dict[str, Any]) -> str:
    """A result as text: `label<TAB>probability<TAB>input` (`label:p label:p ...<TAB>input` with --top-k; tabs
    and line breaks in the input written as \\t and \\n, so one input stays one line), or the continued text."""
    if "text" in result:
        return result["text"]
    shown = result["input"].replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    if len(result["top_k"]) == 1:
        return f"{result['label']}\t{result['probability']:.4f}\t{shown}"
    top = " ".join(f"{entry['label']}:{entry['probability']:.4f}" for entry in result["top_k"])
    return f"{top}\t{shown}"
