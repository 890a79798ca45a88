"""Where the logits come from: each backend maps numpy inputs (by the manifest's input names) to numpy logits.

An export's manifest.json is checked against the files it describes before any input is read: the files it
needs are there, the description sealed into the model file at export (SEAL_KEY) is the manifest's, an
ONNX graph's input and output names, ranks and fixed sizes are the manifest's, and tokenizer.json is the
one the model was trained with. A mismatch is one line naming the file and the field.

Imports are local to each backend, so that the ONNX one brings in onnxruntime and nothing of torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import UserError
from trainer.files import refuse_special
from trainer.model_io import MANIFEST_FILE, SEAL_KEY, TOKENIZER_SHA256, ModelIO, check_tokenizer, first_difference

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
DESCRIPTION_FILES = {"safetensors": "model.json"}  # builds the model around its weights (Transformers: config.json)

Backend = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Loaded:
    model_io: ModelIO
    run: Backend
    tokenizer_path: Path | None
    source: str  # what the predictions come from, for messages: "ONNX export ...", "run ... (last.ckpt)"


def load(path: Path, ckpt: str | None = None) -> Loaded:
    """An export folder (its manifest.json) or a run directory (its config.yaml and a checkpoint)."""
    refuse_special(path, "model")
    if path.is_dir():
        for entry in path.iterdir():  # the files predict reads: the manifest, the model, the tokenizer, the config
            refuse_special(entry, "file")
    if not path.exists():
        raise UserError(f"{str(path)!r} does not exist; give an export folder (trainer export) or a run directory")
    if (path / MANIFEST_FILE).is_file():
        if ckpt is not None:
            raise UserError(f"--ckpt is for run directories; {str(path)!r} is an export of one checkpoint already")
        return _from_export(path)
    if (path / CONFIG_FILE).is_file():
        return _from_run(path, ckpt)
    if (path / "model.json").is_file():
        raise UserError(f"{str(path)!r} is an export made before manifests existed; export the run again")
    raise UserError(f"{str(path)!r} is neither an export folder (no {MANIFEST_FILE}) nor a run directory (no "
                    f"{CONFIG_FILE}); give a folder written by `trainer export` or `trainer fit`")  # fmt: skip


def _from_export(folder: Path) -> Loaded:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        model_io = ModelIO.from_json(manifest)
        fmt, model_file = manifest["format"], folder / manifest["files"]["model"]
        model_io.check()
        if model_file.name != manifest["files"]["model"]:  # the model lives in the export folder, nowhere else
            raise ValueError(f"files.model {manifest['files']['model']!r} is not a file name")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{str(folder / MANIFEST_FILE)!r} is not a manifest written by `trainer export` ({err}); "
                        "export the run again") from None  # fmt: skip
    if fmt not in ("onnx", "torchscript", "safetensors"):
        raise UserError(f"the export {str(folder)!r} is in format {fmt!r}, which this version cannot run; export again")
    description = DESCRIPTION_FILES.get(fmt)
    if description is not None and model_io.family == "huggingface":
        description = "config.json"
    if not model_file.is_file():
        raise UserError(f"the export {str(folder)!r} lacks its model file {model_file.name}; export the run again")
    if description is not None and not (folder / description).is_file():
        raise UserError(f"the export {str(folder)!r} lacks {description}, which its model needs; export the run again")
    tokenizer = folder / TOKENIZER_FILE
    tokenizer_path = tokenizer if tokenizer.is_file() else None
    if tokenizer_path is not None:
        check_tokenizer(tokenizer_path, model_io.preprocess.get(TOKENIZER_SHA256), folder / MANIFEST_FILE)
    source = f"{fmt} export {str(folder)!r}"
    if fmt == "onnx":
        run, sealed = _onnx(model_file, model_io)
    elif fmt == "torchscript":
        run, sealed = _torchscript(model_file, model_io)
    else:
        run, sealed = _safetensors(folder, model_file, model_io)
    _check_sealed(model_io, sealed, folder / MANIFEST_FILE, model_file)
    return Loaded(model_io, _checked(run, model_io, source), tokenizer_path, source)


def _check_sealed(model_io: ModelIO, sealed: str | None, manifest: Path, model_file: Path) -> None:
    """The manifest describes the model file it came with (exports made before the seal: nothing to check)."""
    if sealed is None:
        return
    difference = first_difference(model_io, sealed)
    if difference is not None:
        field, ours, theirs = difference
        raise UserError(f"{str(manifest)!r} says {field}={json.dumps(ours)}, but {model_file.name} was exported "
                        f"with {json.dumps(theirs)}; export the run again")  # fmt: skip


def _checked(run: Backend, model_io: ModelIO, source: str) -> Backend:
    """A model that fails on inputs its manifest describes, or gives logits of another width, is one line."""
    output = model_io.outputs[0]
    width = output.shape[-1] if isinstance(output.shape[-1], int) else None

    def checked(inputs: dict[str, np.ndarray]) -> np.ndarray:
        try:
            logits = run(inputs)
        except Exception as err:  # onnxruntime's and torch's many types: the manifest and model disagree
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise UserError(f"{source} fails on inputs its manifest.json describes ({reason}); export the run "
                            "again") from None  # fmt: skip
        if width is not None and logits.shape[-1] != width:
            raise UserError(f"{source} gives {logits.shape[-1]} logits, but its manifest.json describes {width} "
                            f"({output.name}); export the run again")  # fmt: skip
        return logits

    return checked


def _unloadable(path: Path, err: Exception) -> UserError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return UserError(f"the model file {str(path)!r} cannot be loaded ({reason}); export the run again")


def _from_run(run_dir: Path, ckpt: str | None) -> Loaded:
    from trainer import api

    source = api.export_source(run_dir, ckpt)  # checks the run's tokenizer against its inputs.json
    tokenizer = run_dir / TOKENIZER_FILE
    where = f"run {str(run_dir)!r} ({source.checkpoint_path.name})"
    run = _checked(_module(source.model(), source.model_io), source.model_io, where)
    return Loaded(source.model_io, run, tokenizer if tokenizer.is_file() else None, where)


def _onnx(path: Path, model_io: ModelIO) -> tuple[Backend, str | None]:
    from trainer.extras import check_onnx_extra

    check_onnx_extra("predicting from an ONNX export")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own types (InvalidProtobuf, Fail, ...), none public
        raise _unloadable(path, err) from None
    _check_graph(model_io, session, path)
    output = model_io.outputs[0].name
    return (lambda inputs: session.run([output], inputs)[0]), session.get_modelmeta().custom_metadata_map.get(SEAL_KEY)


def _check_graph(model_io: ModelIO, session: Any, path: Path) -> None:
    """The ONNX graph's own inputs and outputs: the manifest's names, ranks and fixed sizes."""
    for kind, specs, nodes in (("input", model_io.inputs, session.get_inputs()),
                               ("output", model_io.outputs, session.get_outputs())):  # fmt: skip
        if [spec.name for spec in specs] != [node.name for node in nodes]:
            raise UserError(f"manifest.json names the {kind}s {[s.name for s in specs]}, but {path.name} has "
                            f"{[n.name for n in nodes]}; export the run again")  # fmt: skip
        for spec, node in zip(specs, nodes, strict=True):
            fixed = [size if isinstance(size, int) else None for size in node.shape]
            wanted = [size if isinstance(size, int) else None for size in spec.shape]
            if fixed != wanted:
                raise UserError(f"manifest.json gives {kind} {spec.name} the shape {spec.shape}, but {path.name} "
                                f"takes {node.shape}; export the run again")  # fmt: skip


def _torchscript(path: Path, model_io: ModelIO) -> tuple[Backend, str | None]:
    import torch

    files = {SEAL_KEY: ""}
    try:
        graph = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    except (RuntimeError, ValueError) as err:
        raise _unloadable(path, err) from None
    sealed = files[SEAL_KEY]
    sealed = sealed.decode(errors="replace") if isinstance(sealed, bytes) else sealed
    return _torch_call(graph, model_io), sealed or None


def _safetensors(folder: Path, model_file: Path, model_io: ModelIO) -> tuple[Backend, str | None]:
    from safetensors import SafetensorError, safe_open

    from trainer.export import load_exported

    try:
        with safe_open(str(model_file), framework="pt") as weights:
            sealed = (weights.metadata() or {}).get(SEAL_KEY)
        model = load_exported(folder)
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
        raise _unloadable(model_file, err) from None
    return _module(model, model_io), sealed


def _module(model: Any, model_io: ModelIO) -> Backend:
    return _torch_call(model.float().eval().cpu(), model_io)


def _torch_call(model: Any, model_io: ModelIO) -> Backend:
    import torch

    names = [spec.name for spec in model_io.inputs]

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return model(*(torch.from_numpy(inputs[name]) for name in names)).float().numpy()

    return run
