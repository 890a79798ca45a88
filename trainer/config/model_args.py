"""A recipe's model section plus runtime facts of the data -> the model class's constructor arguments.

Pure Python like the rest of `trainer.config`: `trainer plan` uses it with assumed facts, the build
with the data module's real ones.
"""

from __future__ import annotations

from typing import Any

from trainer.config.schema import RunConfig


def model_kwargs(cfg: RunConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """`facts`: in_channels and num_classes for images; vocab_size, and num_classes and pad_id for text
    classification."""
    model = cfg.model.model_dump(exclude={"family"})
    if cfg.model.family == "cnn":
        return {**model, "in_channels": facts["in_channels"], "num_classes": facts["num_classes"]}
    if cfg.model.family == "lstm":
        if cfg.task == "text_classification":
            return {
                **model,
                "vocab_size": facts["vocab_size"],
                "num_classes": facts["num_classes"],
                "pad_id": facts["pad_id"],
            }
        model.pop("bidirectional")
        model.pop("pooling")
        return {**model, "vocab_size": facts["vocab_size"]}
    if cfg.task == "text_classification":
        model.pop("tie_weights")
        return {
            **model,
            "vocab_size": facts["vocab_size"],
            "num_classes": facts["num_classes"],
            "max_len": cfg.data.max_length,
        }
    return {**model, "vocab_size": facts["vocab_size"], "max_len": cfg.data.block_size}
