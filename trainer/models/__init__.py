"""Plain `nn.Module`s: no Lightning, DeepSpeed, datasets or config classes in here."""

from __future__ import annotations

from typing import Any

from torch import nn

from trainer.models.cnn import CNN
from trainer.models.lstm import LSTMClassifier, LSTMLanguageModel
from trainer.models.pretrained import PretrainedCausalLM, PretrainedClassifier
from trainer.models.transformer import GPT, TransformerClassifier

_MODELS: dict[tuple[str, str], type[nn.Module]] = {
    ("image_classification", "cnn"): CNN,
    ("text_classification", "lstm"): LSTMClassifier,
    ("text_classification", "transformer"): TransformerClassifier,
    ("language_modeling", "lstm"): LSTMLanguageModel,
    ("language_modeling", "transformer"): GPT,
    ("text_classification", "huggingface"): PretrainedClassifier,
    ("language_modeling", "huggingface"): PretrainedCausalLM,
}


def build_model(
    task: str, family: str, model_kwargs: dict[str, Any], class_path: str | None = None, import_path: str | None = None
) -> nn.Module:
    """The model of a (task, family) pair, built with plain keyword arguments; for family `custom`, the class that
    `class_path` names (its module looked for in `import_path` first)."""
    if family == "custom":
        from trainer.models.custom import import_model_class

        assert class_path is not None, "a custom model needs its class_path"
        return import_model_class(class_path, import_path)(**model_kwargs)
    return _MODELS[(task, family)](**model_kwargs)


def model_from_hparams(task: str, hparams: Any) -> nn.Module:
    """The untrained model a task's hyperparameters (a checkpoint's, a Task's `hparams`) describe."""
    get = hparams.get
    return build_model(task, get("family"), get("model_kwargs"), get("class_path"), get("import_path"))


__all__ = [
    "CNN",
    "GPT",
    "LSTMClassifier",
    "LSTMLanguageModel",
    "PretrainedCausalLM",
    "PretrainedClassifier",
    "TransformerClassifier",
    "build_model",
    "model_from_hparams",
]
