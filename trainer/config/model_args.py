"""A recipe's model section plus runtime facts of the data -> the model class's constructor arguments.

Pure Python like the rest of `trainer.config`: `trainer plan` uses it with assumed facts, the build
with the data module's real ones.
"""

from __future__ import annotations

from typing import Any

from trainer.config.schema import RunConfig


def model_kwargs(cfg: RunConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """`facts`: in_channels and num_classes (and image_size) for images; vocab_size, and num_classes, pad_id and
    label_names for text classification.

    A custom model's module is imported here (its constructor's signature says which facts it takes); a
    pretrained model's config is read from its folder."""
    if cfg.model.family == "custom":
        return _custom_kwargs(cfg, facts)
    if cfg.model.family == "huggingface":
        return _pretrained_kwargs(cfg, facts)
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


def data_facts(cfg: RunConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """The data module's facts plus those the recipe's data section fixes (the lengths a model is given)."""
    if cfg.task == "text_classification":
        return {**facts, "max_length": cfg.data.max_length}
    if cfg.task == "language_modeling":
        return {**facts, "block_size": cfg.data.block_size}
    return {**facts, "image_size": tuple(facts.get("image_size") or (0, 0))}


def _custom_kwargs(cfg: RunConfig, facts: dict[str, Any]) -> dict[str, Any]:
    from trainer.models.custom import constructor_kwargs, import_model_class

    cls = import_model_class(cfg.model.class_path, cfg.model.import_path)
    return constructor_kwargs(cls, cfg.model.init_args, data_facts(cfg, facts), cfg.task)


def _pretrained_kwargs(cfg: RunConfig, facts: dict[str, Any]) -> dict[str, Any]:
    from trainer.errors import UserError
    from trainer.models.pretrained import context_length, read_config

    config = read_config(cfg.model.pretrained, cfg.model.local_files_only)
    vocab = config.get("vocab_size")
    tokens = facts.get("vocab_size", 0)
    # More tokens than embeddings cannot run; far fewer is a tokenizer that is not the model's own (one made up
    # from a folder without tokenizer files reads every word as unknown). 0: `trainer plan`, no tokenizer read.
    if isinstance(vocab, int) and tokens and not vocab // 2 <= tokens <= vocab:
        raise UserError(f"model.pretrained: its tokenizer has {tokens} tokens but the model embeds {vocab}; give a "
                        "folder with the model's own tokenizer (tokenizer.json)")  # fmt: skip
    length = cfg.data.max_length if cfg.task == "text_classification" else cfg.data.block_size
    limit = context_length(config)
    if limit is not None and length > limit:
        key = "data.max_length" if cfg.task == "text_classification" else "data.block_size"
        raise UserError(f"{key}={length} is more than the {limit} positions model.pretrained was trained with; "
                        f"set {key}={limit} or less")  # fmt: skip
    if cfg.task == "text_classification":
        return {"config": config, "num_classes": facts["num_classes"], "label_names": facts.get("label_names"),
                "pad_id": facts.get("pad_id", 0)}  # fmt: skip
    return {"config": config}


def check_model_settings(cfg: RunConfig) -> None:
    """What the model section names exists and fits, before the data are read or anything is written: a custom
    class imports, is an nn.Module and takes init_args; a pretrained folder has a readable config."""
    if cfg.model.family == "custom":
        from trainer.models.custom import check_init_args, import_model_class

        check_init_args(import_model_class(cfg.model.class_path, cfg.model.import_path), cfg.model.init_args)
    elif cfg.model.family == "huggingface":
        from trainer.models.pretrained import read_config

        read_config(cfg.model.pretrained, cfg.model.local_files_only)
