"""The optional packages a recipe needs (the `deepspeed`, `tensorboard`, `wandb` and `pretrained` extras),
checked with the config, before anything is imported or written: a missing one is one line naming the install
command."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from trainer.errors import UserError

if TYPE_CHECKING:  # the config's import (pydantic, omegaconf) is not needed to check a module is installed
    from trainer.config.schema import RunConfig


def check_extras(cfg: RunConfig, command: str) -> None:
    needed: list[tuple[str, tuple[str, ...], str]] = []
    if command in ("fit", "plan") and cfg.trainer.strategy.startswith("deepspeed"):
        needed.append(("deepspeed", ("deepspeed",), f"trainer.strategy={cfg.trainer.strategy}"))
    if cfg.model.family == "huggingface" or (
        cfg.data.tokenizer is not None and cfg.data.tokenizer.kind == "pretrained"
    ):
        needed.append(("pretrained", ("transformers",), f"model.family={cfg.model.family}"))
    if command == "fit":
        if "tensorboard" in cfg.logger:
            needed.append(("tensorboard", ("tensorboard", "tensorboardX"), "logger=tensorboard"))
        if "wandb" in cfg.logger:
            needed.append(("wandb", ("wandb",), "logger=wandb"))
    for extra, modules, setting in needed:
        if not any(importlib.util.find_spec(module) for module in modules):
            package = modules[0]
            raise UserError(
                f"{setting} needs the {package} package, which is not installed: pip install -e '.[{extra}]' "
                f"(or pip install {package})"
            )


def check_onnx_extra(what: str) -> None:
    """`trainer export format=onnx` and predicting from an ONNX export (`what` says which)."""
    modules = ("onnxruntime",) if what.startswith("predict") else ("onnx", "onnxruntime", "onnxscript")
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise UserError(f"{what} needs {', '.join(missing)}, which {verb} not installed: pip install -e '.[export]' "
                        f"(or pip install {' '.join(missing)})")  # fmt: skip
