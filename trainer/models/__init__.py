"""Plain `nn.Module`s: no Lightning, DeepSpeed, datasets or config classes in here."""

from __future__ import annotations

from typing import Any

from torch import nn

from trainer.models.cnn import CNN
from trainer.models.lstm import LSTMClassifier, LSTMLanguageModel
from trainer.models.transformer import GPT, TransformerClassifier

_MODELS: dict[tuple[str, str], type[nn.Module]] = {
    ("image_classification", "cnn"): CNN,
    ("text_classification", "lstm"): LSTMClassifier,
    ("text_classification", "transformer"): TransformerClassifier,
    ("language_modeling", "lstm"): LSTMLanguageModel,
    ("language_modeling", "transformer"): GPT,
}


def build_model(task: str, family: str, **kwargs: Any) -> nn.Module:
    """The model class for a (task, family) pair, built with plain keyword arguments."""
    return _MODELS[(task, family)](**kwargs)


__all__ = ["CNN", "GPT", "LSTMClassifier", "LSTMLanguageModel", "TransformerClassifier", "build_model"]
