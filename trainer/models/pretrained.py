"""Hugging Face Transformers models as plain `nn.Module`s with the framework's calling convention:
an encoder with a classification head (token ids and the padding mask -> logits [B, num_classes]) and a causal
LM (token ids -> logits [B, T, vocab]).

Each is built from the model's config alone (a plain dict, kept in checkpoints, so that resume, test and export
need neither the pretrained folder nor the network); the pretrained weights are loaded once, when a run starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.errors import UserError

MAX_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")  # where configs keep their context length


class PretrainedSettingError(UserError):
    """A pretrained folder or hub name that cannot serve; the message starts with the recipe key."""


def read_config(pretrained: str, local_files_only: bool) -> dict[str, Any]:
    """The model's config (config.json) as a plain dict: from a local folder, or for a hub name from the Hugging
    Face cache (offline) or the hub (local_files_only=False)."""
    folder = Path(pretrained).expanduser()
    with quiet_transformers():
        from transformers import AutoConfig

        try:
            source = str(folder) if folder.is_dir() else pretrained
            config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
        except (OSError, ValueError, KeyError) as err:
            if local_files_only and not folder.is_dir():
                raise PretrainedSettingError(
                    f"model.pretrained: {pretrained!r} is not a folder, nor in the Hugging Face cache; give a local "
                    "folder with config.json, weights and tokenizer files, or set model.local_files_only=false to "
                    "download it where the network allows"
                ) from None
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            message = f"model.pretrained: cannot read the config of {pretrained!r}: {reason}"
            raise PretrainedSettingError(message) from None
    return config.to_dict()


def context_length(config: dict[str, Any]) -> int | None:
    return next((config[key] for key in MAX_LENGTH_KEYS if isinstance(config.get(key), int)), None)


def _config(config: dict[str, Any], **changes: Any) -> Any:
    from transformers import AutoConfig

    values = {key: value for key, value in config.items() if key != "model_type"}
    values.update(changes)
    return AutoConfig.for_model(config["model_type"], **values)


class PretrainedClassifier(nn.Module):
    """AutoModelForSequenceClassification, its head sized from the data and named by its labels."""

    def __init__(
        self, config: dict[str, Any], num_classes: int, label_names: list[str] | None = None, pad_id: int = 0
    ) -> None:
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        names = label_names if label_names and len(label_names) == num_classes else [str(i) for i in range(num_classes)]
        labels = {"id2label": dict(enumerate(names)), "label2id": {name: index for index, name in enumerate(names)}}
        # A decoder's classification head reads the last token that is not padding; GPT-2 style configs name none.
        padding = {"pad_token_id": pad_id} if config.get("pad_token_id") is None else {}
        hf_config = _config(config, num_labels=num_classes, **labels, **padding)
        self.hf = _from_config(AutoModelForSequenceClassification, hf_config, "sequence-classification head")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits

    def load_pretrained(self, pretrained: str, local_files_only: bool) -> list[str]:
        from transformers import AutoModelForSequenceClassification

        return _load_into(self, AutoModelForSequenceClassification, pretrained, local_files_only)


class PretrainedCausalLM(nn.Module):
    """AutoModelForCausalLM."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        # is_decoder: an encoder's LM head (BERT's) would otherwise attend to the tokens it is to predict.
        self.hf = _from_config(AutoModelForCausalLM, _config(config, is_decoder=True), "causal language-model head")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, use_cache=False).logits

    def load_pretrained(self, pretrained: str, local_files_only: bool) -> list[str]:
        from transformers import AutoModelForCausalLM

        return _load_into(self, AutoModelForCausalLM, pretrained, local_files_only)


def _from_config(auto_class: Any, config: Any, head: str) -> nn.Module:
    try:
        with quiet_transformers():
            return auto_class.from_config(config)
    except ValueError as err:  # transformers: "Unrecognized configuration class ... for this kind of AutoModel"
        reason = str(err).splitlines()[0][:120]
        raise PretrainedSettingError(f"model.pretrained: a {config.model_type} model has no {head} in transformers "
                                     f"({reason}); give a model that has one") from None  # fmt: skip


def _load_into(model: nn.Module, auto_class: Any, pretrained: str, local_files_only: bool) -> list[str]:
    """The folder's weights as `model.hf`; returns the names of the weights that start fresh (a new head)."""
    from safetensors import SafetensorError

    config, dtype, training = model.hf.config, next(model.hf.parameters()).dtype, model.training
    del model.hf  # the freshly initialised copy goes first: one copy in memory while the weights load, not two
    try:
        with quiet_transformers():
            loaded, info = auto_class.from_pretrained(
                str(Path(pretrained).expanduser()), config=config, local_files_only=local_files_only,
                ignore_mismatched_sizes=True, output_loading_info=True,
            )  # fmt: skip
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # no, damaged or foreign weights
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PretrainedSettingError(f"model.pretrained: cannot load the weights of {pretrained!r}: {reason}") from None
    # from_pretrained hands back a model in eval mode; the run decides the mode (Lightning keeps what it finds).
    model.hf = loaded.to(dtype).train(training)
    mismatched = [entry[0] if isinstance(entry, tuple | list) else entry for entry in info.get("mismatched_keys", [])]
    return sorted({*info.get("missing_keys", []), *mismatched})


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load report, progress bar or advice from transformers: the CLI says what matters in one line."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
