"""What goes into an exported model and what comes out, per task: names, dtypes, shapes with their dynamic
axes, the preprocessing an input needs, and what the outputs mean. Written into `manifest.json`, read back
by `trainer predict`; plain data (no torch) so that predicting from an ONNX export needs neither torch nor
the framework's training code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

BATCH, SEQUENCE = "batch", "sequence"  # the dynamic axes' names
MANIFEST_FILE = "manifest.json"  # an export folder's description of its model: a ModelIO, and where it came from
PAD, UNK = "[PAD]", "[UNK]"  # the special tokens of every tokenizer the framework trains


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
                      "vocab_size": model_kwargs["vocab_size"]}  # fmt: skip
        labels = _labels(facts, model_kwargs["num_classes"])
        return ModelIO(task, family, [ids, mask], [logits], preprocess, labels, cfg.data.max_length)
    # A Transformer has no positions beyond the context it was trained with; an LSTM reads any length, and
    # is given the same window, as `trainer generate` does.
    context = model_kwargs.get("max_len", cfg.data.block_size)
    logits = TensorSpec("logits", "float32", [BATCH, SEQUENCE, model_kwargs["vocab_size"]])
    preprocess = {"kind": "prompt", "context_length": context, "suppress_ids": suppress_ids,
                  "vocab_size": model_kwargs["vocab_size"]}  # fmt: skip
    return ModelIO(task, family, [ids], [logits], preprocess, None, context)


def _labels(facts: dict[str, Any], num_classes: int) -> list[str]:
    names = facts.get("label_names")
    return list(names) if names and len(names) == num_classes else [str(index) for index in range(num_classes)]
