"""What goes into an exported model and what comes out, per task: names, dtypes, shapes with their dynamic
axes, the preprocessing an input needs, and what the outputs mean. Written into `manifest.json`, read back
by `trainer predict`; plain data (no torch) so that predicting from an ONNX export needs neither torch nor
the framework's training code."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import UserError

BATCH, SEQUENCE = "batch", "sequence"  # the dynamic axes' names
MAX_IMAGE_SIDE = 8192  # pixels: what predict resizes to, at most (a checked manifest never asks more)
MAX_SEQUENCE = 10_000_000  # tokens, vocabulary entries
MANIFEST_FILE = "manifest.json"  # an export folder's description of its model: a ModelIO, and where it came from
TOKENIZER_SHA256 = "tokenizer_sha256"  # inputs.json and preprocess: which tokenizer.json the model reads
SEAL_KEY = "trainer.model_io"  # the ModelIO a model file was exported with, in the file's own metadata
PAD, UNK = "[PAD]", "[UNK]"  # the special tokens of every tokenizer the framework trains
# ... and their spellings in pretrained tokenizers (BERT's are the framework's; GPT-2 style ones use <...>).
PADDING_TOKENS, UNKNOWN_TOKENS = (PAD, "<pad>"), (UNK, "<unk>")


def never_generated(tokenizer: Any) -> list[int]:
    """Ids a language model must not sample: padding and unknown tokens, in whichever spelling the tokenizer has."""
    found = (tokenizer.token_to_id(token) for token in (*PADDING_TOKENS, *UNKNOWN_TOKENS))
    return sorted({index for index in found if index is not None})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy's name: float32, int64
    shape: list[int | str]  # a str is a dynamic axis


@dataclass(frozen=True)
class ModelIO:
    task: str
    family: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # How a raw input becomes the tensors: "image" (channels, image_size, mean, std), "text" (max_length,
    # pad_id, vocab_size) or "prompt" (context_length, suppress_ids, vocab_size); text and prompt use the
    # export's tokenizer.json.
    preprocess: dict[str, Any]
    labels: list[str] | None = None  # class names, by output index (classifiers)
    max_sequence: int | None = field(default=None)  # the longest sequence the model takes (None: any)

    def check(self) -> None:
        """ValueError unless every value predicting reads has its type and a sane range: a manifest edited by
        hand must fail in one line, not deep in numpy or onnxruntime (or by allocating a 100000^2 image)."""
        pre, kind = self.preprocess, self.preprocess.get("kind")
        inputs = {"image": 1, "text": 2, "prompt": 1}.get(kind)
        if inputs is None:
            raise ValueError(f"preprocess.kind={kind!r} is none of image, text, prompt")
        if len(self.inputs) != inputs or len(self.outputs) != 1:
            raise ValueError(f"a {kind} model takes {inputs} input(s) and gives 1 output")
        if kind == "image":
            channels = _integer(pre, "channels", 1, 3)
            size = pre.get("image_size")
            if not (isinstance(size, list) and len(size) == 2):
                raise ValueError(f"preprocess.image_size={size!r} is not [height, width]")
            height, width = (_integer({"side": side}, "side", 1, MAX_IMAGE_SIDE) for side in size)
            if self.inputs[0].shape[1:] != [channels, height, width]:
                raise ValueError(f"preprocess (channels, image_size) does not match input shape {self.inputs[0].shape}")
            for key in ("mean", "std"):
                value = pre.get(key)
                if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
                    raise ValueError(f"preprocess.{key}={value!r} is not a number")
            if pre["std"] == 0:
                raise ValueError("preprocess.std is 0")
        else:
            vocab = _integer(pre, "vocab_size", 1, MAX_SEQUENCE)
            if kind == "text":
                _integer(pre, "max_length", 1, MAX_SEQUENCE)
                _integer(pre, "pad_id", 0, vocab - 1)
            else:
                _integer(pre, "context_length", 1, MAX_SEQUENCE)
                ids = pre.get("suppress_ids")
                if not isinstance(ids, list):
                    raise ValueError("preprocess.suppress_ids is not a list")
                for index in range(len(ids)):
                    _integer(dict(enumerate(ids)), index, 0, vocab - 1)
        if kind != "prompt":
            classes = self.outputs[0].shape[-1]
            labels = self.labels
            if not (isinstance(labels, list) and len(labels) == classes and all(isinstance(n, str) for n in labels)):
                raise ValueError(f"labels are not {classes} names, one per output")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        specs = [*self.inputs, *self.outputs]
        return {s.name: {axis: size for axis, size in enumerate(s.shape) if isinstance(size, str)} for s in specs}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dynamic_axes"] = self.dynamic_axes()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelIO:
        tensors = {key: [TensorSpec(**spec) for spec in data[key]] for key in ("inputs", "outputs")}
        return cls(data["task"], data["family"], tensors["inputs"], tensors["outputs"], data["preprocess"],
                   data.get("labels"), data.get("max_sequence"))  # fmt: skip


def model_io(cfg: Any, model_kwargs: dict[str, Any], facts: dict[str, Any], suppress_ids: list[int]) -> ModelIO:
    """`cfg`: the run's RunConfig; `facts`: the run's inputs.json (trainer.data's inference_facts)."""
    task, family = cfg.task, cfg.model.family
    if task == "image_classification":
        channels = model_kwargs["in_channels"]
        height, width = facts["image_size"]
        preprocess = {"kind": "image", "channels": channels, "image_size": [height, width],
                      "mean": cfg.data.normalize_mean, "std": cfg.data.normalize_std}  # fmt: skip
        images = TensorSpec("images", "float32", [BATCH, channels, height, width])
        logits = TensorSpec("logits", "float32", [BATCH, model_kwargs["num_classes"]])
        return ModelIO(task, family, [images], [logits], preprocess, _labels(facts, model_kwargs["num_classes"]))
    ids = TensorSpec("input_ids", "int64", [BATCH, SEQUENCE])
    if task == "text_classification":
        mask = TensorSpec("attention_mask", "int64", [BATCH, SEQUENCE])
        logits = TensorSpec("logits", "float32", [BATCH, model_kwargs["num_classes"]])
        preprocess = {"kind": "text", "max_length": cfg.data.max_length, "pad_id": model_kwargs.get("pad_id", 0),
                      "vocab_size": model_kwargs["vocab_size"], **_tokenizer_identity(facts)}  # fmt: skip
        labels = _labels(facts, model_kwargs["num_classes"])
        return ModelIO(task, family, [ids, mask], [logits], preprocess, labels, cfg.data.max_length)
    # A Transformer has no positions beyond the context it was trained with; an LSTM reads any length, and
    # is given the same window, as `trainer generate` does.
    context = model_kwargs.get("max_len", cfg.data.block_size)
    logits = TensorSpec("logits", "float32", [BATCH, SEQUENCE, model_kwargs["vocab_size"]])
    preprocess = {"kind": "prompt", "context_length": context, "suppress_ids": suppress_ids,
                  "vocab_size": model_kwargs["vocab_size"], **_tokenizer_identity(facts)}  # fmt: skip
    return ModelIO(task, family, [ids], [logits], preprocess, None, context)


def _tokenizer_identity(facts: dict[str, Any]) -> dict[str, str]:
    """The sha256 of the run's tokenizer.json, where the run recorded it (runs before it did: nothing)."""
    digest = facts.get(TOKENIZER_SHA256)
    return {TOKENIZER_SHA256: digest} if isinstance(digest, str) else {}


def check_tokenizer(path: Path, expected: str | None, recorded_in: Path) -> None:
    """`path` is the tokenizer the model was trained with, by its sha256 (when one was recorded)."""
    if expected is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise UserError(
            f"{str(path)!r} is not the tokenizer this model was trained with (its sha256 differs from the one "
            f"{recorded_in.name} records); put back the tokenizer.json of the run it was trained in"
        )


def seal(io: ModelIO) -> str:
    """The description a model file carries inside itself (SEAL_KEY in its metadata), so that predict can
    check manifest.json against what the file really is, not only against itself."""
    return json.dumps(asdict(io), sort_keys=True)


def first_difference(io: ModelIO, sealed: str) -> tuple[str, Any, Any] | None:
    """(dotted field, manifest's value, the model file's) where manifest.json's description differs from the
    one sealed into the model file at export; None when they agree."""
    try:
        theirs = json.loads(sealed)
    except ValueError:
        return ("(sealed description)", None, sealed[:60])
    return _difference(asdict(io), theirs, "")


def _difference(ours: Any, theirs: Any, where: str) -> tuple[str, Any, Any] | None:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs), key=str):
            found = _difference(ours.get(key), theirs.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for index, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
            found = _difference(mine, other, f"{where}[{index}]")
            if found:
                return found
        return None
    return None if ours == theirs else (where, ours, theirs)


def _integer(values: dict, key: Any, low: int, high: int) -> int:
    value = values.get(key)
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ValueError(f"{key}={value!r} is not a whole number from {low} to {high}")
    return value


def _labels(facts: dict[str, Any], num_classes: int) -> list[str]:
    names = facts.get("label_names")
    return list(names) if names and len(names) == num_classes else [str(index) for index in range(num_classes)]
