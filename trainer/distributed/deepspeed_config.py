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
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import UserError
from trainer.files import refuse_special


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
    refuse_special(path, "deepspeed.config")
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
    """Raise a one-line UserError for a key DeepSpeed would ignore or a value it rejects, naming the whole
    dotted path (`zero_optimization.stag`) and the closest valid key."""
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
        where = _user_path(config, [str(p) for p in first["loc"]])
        if first["type"] == "extra_forbidden":
            valid = _model_fields(err.title, [str(p) for p in first["loc"][:-1]])
            hint = _closest(where, valid)
            raise UserError(f"invalid DeepSpeed setting {where!r}: DeepSpeed has no such key{hint}") from None
        raise UserError(f"invalid DeepSpeed setting {where!r}: {first['msg']}") from None
    except (AssertionError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"invalid DeepSpeed config: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    unknown = sorted(set(config) - tracked.read)
    if unknown:
        raise UserError(
            f"unknown DeepSpeed key {unknown[0]!r} (DeepSpeed would ignore it){_closest(unknown[0], tracked.read)}"
        )
    for section, keys in _PLAIN_SECTIONS.items():
        given = config.get(section)
        for key in sorted(set(given) - set(keys)) if isinstance(given, dict) else []:
            where = f"{section}.{key}"
            raise UserError(f"unknown DeepSpeed key {where!r} (DeepSpeed would ignore it){_closest(key, keys)}")


# Sections DeepSpeed reads as plain dicts (the others go to its pydantic models, which refuse unknown keys).
_PLAIN_SECTIONS = {"optimizer": ("type", "params"), "scheduler": ("type", "params")}


def _closest(key: str, valid: Any) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], sorted(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else "; see DeepSpeed's configuration reference"


def _user_path(config: dict[str, Any], loc: list[str]) -> str:
    """pydantic's location inside one DeepSpeed section, as the dotted path in the user's whole config."""

    def paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        if not isinstance(node, dict):
            return []
        found = []
        for key, value in node.items():
            found.append((*prefix, str(key)))
            found.extend(paths(value, (*prefix, str(key))))
        return found

    n = len(loc)
    matches = [path for path in paths(config) if list(path[-n:]) == loc]
    if len(matches) != 1 and n > 0:  # a missing key: find its parent instead
        parents = [path for path in paths(config) if list(path[-(n - 1) :]) == loc[:-1]] if n > 1 else []
        matches = [(*parents[0], loc[-1])] if len(parents) == 1 else []
    return ".".join(matches[0]) if matches else ".".join(loc)


def _model_fields(title: str, loc: list[str]) -> list[str]:
    """The keys DeepSpeed's config model named `title` accepts at `loc` (its nested models followed)."""
    from deepspeed.runtime.config_utils import DeepSpeedConfigModel

    def subclasses(cls: type) -> list[type]:
        return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]

    model = next((cls for cls in subclasses(DeepSpeedConfigModel) if cls.__name__ == title), None)
    for part in loc:
        if model is None or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, DeepSpeedConfigModel)), None)
    if model is None:
        return []
    return [name for name, field in model.model_fields.items() for name in (name, field.alias) if name]


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
    # Lightning's bucket sizes (2e8 elements), which it too leaves out when given a config: DeepSpeed's own
    # default, 5e8, holds about 1 GB per bf16 bucket.
    section.setdefault("reduce_bucket_size", 200_000_000)
    section.setdefault("allgather_bucket_size", 200_000_000)
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    # Lightning's own default, which it leaves out when given a config; its ZeRO-3 evaluation reads it.
    config.setdefault("zero_allow_untested_optimizer", True)
    return config
