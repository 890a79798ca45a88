"""Load a recipe, follow `inherits:`, apply `key.path=value` overrides, validate into a `RunConfig`.

OmegaConf does the YAML parsing (a safe loader), the merging and the override parsing; pydantic
does the validation. Every failure here becomes a one-line `UserError`.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from trainer.config.schema import RunConfig
from trainer.errors import UserError
from trainer.files import refuse_special

RECIPE_SUFFIXES = (".yaml", ".yml")
# Dotted keys of the schema are a few levels deep; anything deeper is unknown (and OmegaConf would recurse).
MAX_KEY_DEPTH = 8
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# `${oc.env:NAME}` would copy an environment variable (an API key, say) into the saved config.yaml.
_RESOLVER_CALL = re.compile(r"\$\{\s*[\w.]+\s*:")
MAX_RECIPE_BYTES = 2**20  # shipped recipes are under 2 KB; a 38 MB one took 157 s to refuse


def recipes_dir() -> Path:
    """Shipped recipes: inside the wheel (`trainer/recipes`) or, for a source checkout, `./recipes`."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "recipes", package_dir.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    raise UserError("the shipped recipes are missing from this installation; reinstall with `pip install -e .`")


def shipped_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(recipes_dir().rglob("*.yaml"))}


def find_recipe(recipe: str, relative_to: Path | None = None) -> Path:
    """A recipe is a path to a YAML file or the name of a shipped one."""
    looks_like_path = recipe.endswith(RECIPE_SUFFIXES) or "/" in recipe
    if looks_like_path:
        path = Path(recipe).expanduser()
        if not path.is_absolute() and relative_to is not None and (relative_to / path).is_file():
            path = relative_to / path
        refuse_special(path, "recipe")
        if path.is_file():
            return path
        raise UserError(f"recipe file {recipe!r} does not exist; give a path to a YAML file or a shipped name")
    shipped = shipped_recipes()
    if recipe in shipped:
        return shipped[recipe]
    close = difflib.get_close_matches(recipe, shipped, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(
        f"no recipe named {recipe!r}; {hint}run `trainer recipes` to list them, or give a path to a YAML file"
    )


def _read_yaml(path: Path) -> DictConfig:
    size = path.stat().st_size if path.is_file() else 0
    if size > MAX_RECIPE_BYTES:  # parsing tens of MB of YAML takes minutes before any check could answer
        raise UserError(
            f"recipe {path} is {size / 2**20:.1f} MiB; a recipe is a few KB of settings (at most "
            f"{MAX_RECIPE_BYTES // 2**20} MiB): keep data in files that data.path names"
        )
    try:
        conf = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise UserError(f"invalid YAML in {path}{_yaml_problem(err)}; fix the recipe file") from None
    except UnicodeDecodeError:
        raise UserError(f"recipe {path} is not UTF-8 text; save it as UTF-8") from None
    except RecursionError:
        raise UserError(f"recipe {path} is nested too deeply to be a recipe; fix the recipe file") from None
    except IsADirectoryError:
        raise UserError(f"recipe {path} is a folder; give a YAML file") from None
    except OmegaConfBaseException as err:
        raise UserError(f"recipe {path} is not a recipe: {str(err).splitlines()[0]}; fix the recipe file") from None
    if not isinstance(conf, DictConfig):
        raise UserError(f"recipe {path} must be a mapping of keys to values, not a {type(conf).__name__}")
    # Checked on the file's own text, before any value is read (reading resolves `${...}`).
    raw = OmegaConf.to_container(conf, resolve=False)
    _refuse_resolver_calls(raw, where=f" in {path}")
    parent = raw.get("inherits")  # type: ignore[union-attr]
    if parent is not None and (not isinstance(parent, str) or "${" in parent):
        raise UserError(f"inherits: in {path} must be a recipe name or a path, written out; fix the recipe file")
    return conf


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{where}: {problem}"


def load_recipe(path: Path, _seen: tuple[Path, ...] = ()) -> DictConfig:
    """Read a recipe and, recursively, the recipe it `inherits:`; the child's fields win."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise UserError(f"recipes inherit from each other in a loop ({chain}); remove one `inherits:`")
    conf = _read_yaml(path)
    parent_name = conf.get("inherits")
    if parent_name is None:
        return conf
    parent = load_recipe(find_recipe(str(parent_name), relative_to=path.parent), (*_seen, path))
    # The child's own name wins; the parent's `inherits` is consumed here.
    merged = OmegaConf.merge(_without_replaced_model(parent, conf), conf)
    return merged  # type: ignore[return-value]


def parse_overrides(words: list[str]) -> DictConfig:
    """`a.b=value` words into one config; values are YAML scalars or lists (`[1,2]`)."""
    overrides = OmegaConf.create()
    for word in words:
        key, sep, raw_value = word.partition("=")
        if not sep or key.startswith("-"):
            raise UserError(f"override {word!r} has no '='; write overrides as key.path=value (e.g. optim.lr=3e-4)")
        if not key:
            raise UserError(f"override {word!r} has no key; write overrides as key.path=value (e.g. optim.lr=3e-4)")
        try:
            raw_value.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell passed that are no UTF-8 text (Python keeps them as surrogates)
            raise UserError(f"the value of override {key!r} is not UTF-8 text; give it as UTF-8") from None
        if not raw_value.strip():
            # An unset shell variable (`resume=$RUN`) must not quietly mean "no value".
            raise UserError(f"override {word!r} has no value; give one, or write {key}=null to unset it")
        if not _KEY.fullmatch(key) or key.count(".") >= MAX_KEY_DEPTH:
            close = difflib.get_close_matches(key, valid_keys(RunConfig), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "run `trainer config <recipe>` to see the valid keys"
            raise UserError(f"unknown key {key[:80]!r} in override; {hint}")
        _refuse_resolver_calls(raw_value, key)
        try:
            node: Any = OmegaConf.to_container(OmegaConf.from_dotlist([word]), resolve=False)
            for part in key.split("."):  # unresolved: `${model.d_model}` refers to the merged recipe, not this word
                node = node[part]
        except OmegaConfBaseException as err:
            raise UserError(f"cannot parse override {word!r}: {err}".splitlines()[0]) from None
        except yaml.YAMLError as err:
            raise UserError(
                f"cannot parse the value of override {word!r}{_yaml_problem(err)}; quote it or close its brackets"
            ) from None
        except RecursionError:
            raise UserError(f"the value of override {key!r} is nested too deeply") from None
        # `ROMEO:` parses as a YAML mapping but is meant as text; a mapping is written `{key: value}`.
        if isinstance(node, dict) and not raw_value.lstrip().startswith("{"):
            node = raw_value
        OmegaConf.update(overrides, key, node, force_add=True)
    return overrides


def compose(recipe: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The merged, resolved recipe as a plain dict (not yet validated)."""
    path = find_recipe(recipe)
    conf = load_recipe(path)
    try:
        if conf.get("name") is None:
            conf.name = path.stem
        changes = parse_overrides(overrides or [])
        conf = OmegaConf.merge(_without_replaced_model(conf, changes), changes)
        raw = OmegaConf.to_container(conf, resolve=False)
        _refuse_resolver_calls(raw)
        resolved = OmegaConf.to_container(conf, resolve=True)
        _anchor_import_path(resolved, path.resolve().parent)
        return resolved  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise UserError(f"cannot resolve the recipe: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise UserError("the recipe is nested too deeply to be a recipe; fix it") from None


def _without_replaced_model(base: DictConfig, changes: DictConfig) -> DictConfig:
    """`base` without its model section when `changes` names another model family: a custom or pretrained model
    replaces the recipe's CNN or Transformer whole, rather than inheriting its `channels` or `d_model`."""
    family = OmegaConf.select(changes, "model.family", default=None)
    if family is None or family == OmegaConf.select(base, "model.family", default=None):
        return base
    base = base.copy()
    base.pop("model", None)
    return base


def _anchor_import_path(raw: dict[str, Any], recipe_folder: Path) -> None:
    """A custom model's module is looked for beside the recipe (a relative model.import_path: from there), and
    the run's config.yaml records the absolute folder, so that resume, test and export find it from anywhere."""
    model = raw.get("model")
    if not (isinstance(model, dict) and model.get("family") == "custom"):
        return
    folder = model.get("import_path")
    if folder is None:
        # A shipped recipe's folder holds no user module: the user's project is where they run the command.
        shipped = recipe_folder.resolve() == recipes_dir().resolve()
        model["import_path"] = str(Path.cwd() if shipped else recipe_folder)
    elif isinstance(folder, str):
        model["import_path"] = str(recipe_folder / Path(folder).expanduser())


def _refuse_resolver_calls(node: Any, key: str = "", where: str = "") -> None:
    """References to other keys (`${model.d_model}`) are fine; resolvers such as `${oc.env:...}` are not.
    Keys must be text (YAML allows `~: 2` or `1: x`, which name no setting)."""
    if isinstance(node, dict):
        for name, value in node.items():
            if not isinstance(name, str):
                raise UserError(f"key {name!r}{where} is not a name; recipe keys are words such as optim.lr")
            _refuse_resolver_calls(value, f"{key}.{name}" if key else name, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _refuse_resolver_calls(value, f"{key}.{index}", where)
    elif isinstance(node, str) and _RESOLVER_CALL.search(node):
        raise UserError(
            f"{key}{where} calls a resolver; write the value itself (resolvers such as oc.env would copy "
            "the environment into the run's saved config and its logs)"
        )


def load_config(recipe: str, overrides: list[str] | None = None) -> RunConfig:
    """Recipe name or path plus overrides -> one validated `RunConfig`."""
    return validate(compose(recipe, overrides))


def load_config_file(path: Path, overrides: list[str] | None = None) -> RunConfig:
    """A saved `config.yaml` (of a run directory) plus overrides."""
    return validate(compose(str(path), overrides))


def validate(raw: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, raw)) from None


def read_description(path: Path) -> str:
    return str(load_recipe(path).get("description") or "")


def to_yaml(config: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(config.model_dump(mode="json")))


# ----------------------------------------------------------------------------- error messages


def describe_validation_error(err: ValidationError, raw: dict[str, Any]) -> str:
    """The first error of a validation, as one line naming the key and the fix."""
    first = err.errors()[0]
    key = _user_key(first["loc"], raw)
    kind = first["type"]
    if kind == "extra_forbidden":
        if key in valid_keys(RunConfig):  # valid elsewhere, e.g. a CNN setting after model.family=lstm
            return f"key {key!r} does not apply with the other settings of its section; remove it"
        close = difflib.get_close_matches(key, valid_keys(RunConfig), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "run `trainer config <recipe>` to see the valid keys"
        return f"unknown key {key!r}; {hint}"
    # A union (an int or a float, say) fails once per branch: say what each branch wanted.
    branches = [e["msg"].removeprefix("Value error, ") for e in err.errors() if _user_key(e["loc"], raw) == key]
    message = " or ".join(dict.fromkeys(branches))
    if kind == "missing":
        return f"missing key {key!r}; set it in the recipe or with {key}=..."
    if not key:
        return f"invalid recipe: {message}"
    shown = first.get("input")
    got = f" (got {shown!r})" if not isinstance(shown, dict | list) else ""
    return f"invalid value for {key!r}: {message}{got}"


def _user_key(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """pydantic's error location as the dotted key the user wrote (union tags dropped)."""
    parts: list[str] = []
    node: Any = raw
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            parts.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            parts.append(str(part))
            node = node[part] if part < len(node) else None
        elif isinstance(node, dict) and part == node.get("family"):
            continue  # a discriminated-union tag such as 'cnn' in ('model', 'cnn', 'channels')
        elif not isinstance(node, dict | list) and parts:
            break  # a union branch's tag under a plain value: not part of the user's key
        elif i == len(loc) - 1 or not isinstance(node, dict):
            parts.append(str(part))
    return ".".join(parts)


def valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts, for 'did you mean' suggestions."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        for sub in _models_in(field.annotation):
            keys.extend(valid_keys(sub, dotted + "."))
    return sorted(set(keys))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []
