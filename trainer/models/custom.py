"""Your own `nn.Module`: imported by its class path and built with its `init_args` plus the facts of the data that
its constructor names. Every check here says what is wrong in one line naming the recipe key."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from trainer.config.schema import NEVER_MODELS
from trainer.errors import UserError, error_with_place

# The facts of the data each task passes to a constructor that names them (the README's "Your own model").
DATA_FACTS: dict[str, tuple[str, ...]] = {
    "image_classification": ("num_classes", "in_channels", "image_size"),
    "text_classification": ("vocab_size", "num_classes", "pad_id", "max_length"),
    "language_modeling": ("vocab_size", "block_size"),
}


class ModelSettingError(UserError):
    """A bad custom-model setting; the message starts with the recipe key (`model.init_args.width: ...`). A
    UserError wherever it is met: fit, but also export, predict or test of a run whose class has gone."""


def import_model_class(class_path: str, import_path: str | None = None) -> type[nn.Module]:
    """The class `module:Class` or `module.Class` names, its module looked for in `import_path` first, then in the
    working directory, then wherever Python looks."""
    module_name, _, class_name = class_path.rpartition(":") if ":" in class_path else class_path.rpartition(".")
    top = module_name.split(".")[0]
    if top in NEVER_MODELS or (module_name.endswith(".__main__")):
        # Checked here too, for class paths read from a checkpoint or an export's model.json, not only a recipe.
        raise ModelSettingError(f"model.class_path: {class_path!r} names {module_name!r}, a module that runs a "
                                "program or holds no model; name your own nn.Module class")  # fmt: skip
    try:
        with _searchable(import_path):
            module = importlib.import_module(module_name)
    except ImportError as err:
        where = f" (looked in {import_path} and the working directory first)" if import_path else ""
        raise ModelSettingError(f"model.class_path: cannot import {module_name!r}: {err}{where}") from None
    except (Exception, SystemExit) as err:  # the module's own code failed (or exited): say where, in one line
        raise ModelSettingError(
            f"model.class_path: importing {module_name!r} failed: {error_with_place(err)}"
        ) from None
    found = getattr(module, class_name, None)
    if found is None and module_name == "__main__":
        raise ModelSettingError(
            f"model.class_path: {class_path!r} was defined in a notebook or script, and exists only while it runs: "
            "call trainer.api (test, export, generate) from there, or move the class into a module beside the recipe"
        )
    if found is None:
        close = difflib.get_close_matches(class_name, [n for n in dir(module) if not n.startswith("_")], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelSettingError(f"model.class_path: module {module_name!r} has no {class_name!r}{hint}")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ModelSettingError(f"model.class_path: {class_path!r} is a {type(found).__name__}, not an nn.Module "
                                "subclass; name your model's class")  # fmt: skip
    return found


def check_init_args(cls: type[nn.Module], init_args: dict[str, Any]) -> dict[str, Any]:
    """Every init_args name is an argument of the constructor (else the closest one), every value of its type;
    the values as the annotations have them (`"false"` for a bool is False, not a truthy string)."""
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for name in init_args:
        if name not in parameters and not takes_any:
            close = difflib.get_close_matches(name, named, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(named) or 'nothing'}"
            raise ModelSettingError(f"model.init_args.{name}: {cls.__name__} takes no argument {name!r}{hint}")
    return _check_types(cls, init_args)


def constructor_kwargs(cls: type[nn.Module], init_args: dict[str, Any], facts: dict[str, Any], task: str) -> dict:
    """init_args plus the data's facts the constructor names, checked against its signature and annotations."""
    kwargs = check_init_args(cls, init_args)
    parameters = inspect.signature(cls).parameters
    for fact in DATA_FACTS[task]:
        value = list(facts[fact]) if isinstance(facts.get(fact), tuple) else facts.get(fact)
        if fact in init_args and _plain(init_args[fact]) != value:
            raise ModelSettingError(f"model.init_args.{fact}: {init_args[fact]!r} contradicts the data, which give "
                                    f"{fact}={value!r}; drop it (the data's value is passed for you)")  # fmt: skip
        if fact in parameters:
            kwargs[fact] = value
    for name, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty and parameter.kind in (
            parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)  # fmt: skip
        if required and name not in kwargs:
            raise ModelSettingError(f"model.init_args.{name}: {cls.__name__} needs it; add it to model.init_args")
    return kwargs


def _check_types(cls: type[nn.Module], init_args: dict[str, Any]) -> dict[str, Any]:
    """Each init_args value against the constructor's annotation, where pydantic can read it, as validated."""
    from pydantic import TypeAdapter, ValidationError

    checked = dict(init_args)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations that do not resolve (a name only imported under TYPE_CHECKING): unchecked
        return checked
    for name, value in init_args.items():
        if name not in hints:
            continue
        try:
            adapter = TypeAdapter(hints[name])
        except Exception:  # a type pydantic cannot validate (an nn.Module, say): unchecked
            continue
        try:
            validated = adapter.validate_python(value)  # lax, as YAML writes values: 3 for a float, a list for a tuple
        except ValidationError:
            expected = getattr(hints[name], "__name__", None) or str(hints[name]).replace("typing.", "")
            raise ModelSettingError(f"model.init_args.{name}: {value!r} is not {expected}, as "
                                    f"{cls.__name__}.__init__ declares") from None  # fmt: skip
        if isinstance(validated, int | float | str | bool) or validated is None:  # plain data a checkpoint keeps
            checked[name] = validated
    return checked


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@contextlib.contextmanager
def _searchable(import_path: str | None) -> Iterator[None]:
    """The recipe's folder, then the working directory, first on the path while the module is imported, as a
    script beside them would import it; afterwards not, so that a file there (an `onnx.py`) never shadows a
    library the framework imports later."""
    added = [folder for folder in (import_path, str(Path.cwd())) if folder and folder not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)
