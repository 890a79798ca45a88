"""The DeepSpeed config a run uses: the stage from `trainer.strategy`, the rest from the recipe, validated.

DeepSpeed silently ignores top-level keys it does not know; a misspelt key would then change nothing
without a word. Here the user's config is parsed by DeepSpeed's own `DeepSpeedConfig` while the keys
it reads are recorded: any key it never reads is an error, and its nested sections are validated by
DeepSpeed's pydantic models (which forbid unknown keys themselves).
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import UserError


@dataclass(frozen=True)
class ZeroSettings:
    """The ZeRO stage a strategy name stands for, and what it offloads to the CPU."""

    stage: int
    offload_optimizer: bool
    offload_parameters: bool


class _ReadTracker(dict):
    """A dict that remembers which keys were looked up."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def read_user_config(config: str | dict[str, Any] | None) -> dict[str, Any]:
    """`deepspeed.config`: a path to a DeepSpeed JSON file, an inline mapping, or nothing."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return copy.deepcopy(config)
    path = Path(config).expanduser()
    if not path.is_file():
        raise UserError(f"deepspeed.config {config!r} does not exist; give a DeepSpeed JSON file or a mapping")
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"deepspeed.config {config!r} is not valid JSON (line {err.lineno}): {err.msg}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"deepspeed.config {config!r} must hold a JSON object")
    return loaded


def validate_deepspeed_config(config: dict[str, Any]) -> None:
    """Raise a one-line UserError for a key DeepSpeed would ignore or a value it rejects."""
    if not config:
        return
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError

    tracked = _ReadTracker(copy.deepcopy(config))
    # DeepSpeed insists on a batch size; the real one is filled in from the recipe later.
    tracked.setdefault("train_micro_batch_size_per_gpu", 1)
    try:
        DeepSpeedConfig(tracked)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"invalid DeepSpeed setting {where!r} ({err.title}): {first['msg']}") from None
    except (AssertionError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"invalid DeepSpeed config: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    unknown = sorted(set(config) - tracked.read)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(tracked.read), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see DeepSpeed's configuration reference"
        raise UserError(f"unknown DeepSpeed key {unknown[0]!r} (DeepSpeed would ignore it){hint}")


def build_deepspeed_config(user_config: dict[str, Any], zero: ZeroSettings, micro_batch_size: int) -> dict[str, Any]:
    """The config handed to Lightning's DeepSpeedStrategy: the user's, with the stage, offloads and micro
    batch of the recipe. Lightning adds precision, gradient accumulation and clipping from the Trainer."""
    config = copy.deepcopy(user_config)
    section = config.setdefault("zero_optimization", {})
    section["stage"] = zero.stage
    if zero.offload_optimizer:
        section.setdefault("offload_optimizer", {"device": "cpu", "pin_memory": False})
    if zero.offload_parameters:
        section.setdefault("offload_param", {"device": "cpu", "pin_memory": False})
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    return config
