"""Where the logits come from: each backend maps numpy inputs (by the manifest's input names) to numpy logits.

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
from trainer.model_io import MANIFEST_FILE, ModelIO

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"

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
    if not model_file.is_file():
        raise UserError(f"the export {str(folder)!r} lacks its model file {model_file.name}; export the run again")
    tokenizer = folder / TOKENIZER_FILE
    tokenizer_path = tokenizer if tokenizer.is_file() else None
    source = f"{fmt} export {str(folder)!r}"
    if fmt == "onnx":
        return Loaded(model_io, _onnx(model_file, model_io), tokenizer_path, source)
    if fmt == "torchscript":
        return Loaded(model_io, _torchscript(model_file, model_io), tokenizer_path, source)
    if fmt == "safetensors":
        from safetensors import SafetensorError

        from trainer.export import load_exported

        try:
            model = load_exported(folder)
        except (SafetensorError, RuntimeError, ValueError, KeyError, TypeError) as err:
            raise _unloadable(model_file, err) from None
        return Loaded(model_io, _module(model, model_io), tokenizer_path, source)
    raise UserError(f"the export {str(folder)!r} is in format {fmt!r}, which this version cannot run; export again")


def _unloadable(path: Path, err: Exception) -> UserError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return UserError(f"the model file {str(path)!r} cannot be loaded ({reason}); export the run again")


def _from_run(run_dir: Path, ckpt: str | None) -> Loaded:
    from trainer import api

    source = api.export_source(run_dir, ckpt)
    tokenizer = run_dir / TOKENIZER_FILE
    where = f"run {str(run_dir)!r} ({source.checkpoint_path.name})"
    return Loaded(source.model_io, _module(source.model(), source.model_io), tokenizer if tokenizer.is_file() else None,
                  where)  # fmt: skip


def _onnx(path: Path, model_io: ModelIO) -> Backend:
    from trainer.extras import check_onnx_extra

    check_onnx_extra("predicting from an ONNX export")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own types (InvalidProtobuf, Fail, ...), none public
        raise _unloadable(path, err) from None
    output = model_io.outputs[0].name
    return lambda inputs: session.run([output], inputs)[0]


def _torchscript(path: Path, model_io: ModelIO) -> Backend:
    import torch

    try:
        graph = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise _unloadable(path, err) from None
    return _torch_call(graph, model_io)


def _module(model: Any, model_io: ModelIO) -> Backend:
    return _torch_call(model.float().eval().cpu(), model_io)


def _torch_call(model: Any, model_io: ModelIO) -> Backend:
    import torch

    names = [spec.name for spec in model_io.inputs]

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return model(*(torch.from_numpy(inputs[name]) for name in names)).float().numpy()

    return run
