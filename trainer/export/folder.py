"""Export a trained model into one self-contained folder that runs without the framework: the weights
(safetensors, loaded into the plain `nn.Module`) or a graph (ONNX for onnxruntime, TorchScript for
libtorch), the run's config and tokenizer, and `manifest.json` saying what goes in and comes out.

Loading a safetensors export needs torch, safetensors and `trainer.models`; an ONNX export needs only
onnxruntime (and `tokenizers` for text); neither needs Lightning or DeepSpeed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from trainer.errors import UserError, WriteFailed
from trainer.export.graph import ATOL, RTOL, check_parity, write_onnx, write_torchscript
from trainer.lifecycle.checkpoints import TrainingCheckpoint, plain_model_state
from trainer.model_io import MANIFEST_FILE, SEAL_KEY, ModelIO, seal
from trainer.models import model_from_hparams
from trainer.writable import check_writable

FORMATS = ("safetensors", "onnx", "torchscript")
# safetensors keeps the folder it has always had; the graphs go beside it.
EXPORT_DIRS = {"safetensors": "export", "onnx": "export-onnx", "torchscript": "export-torchscript"}
EXPORT_DIR = EXPORT_DIRS["safetensors"]
MODEL_FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx", "torchscript": "model.pt"}
WEIGHTS_FILE = MODEL_FILES["safetensors"]
MODEL_FILE = "model.json"  # safetensors: the class and constructor arguments to build
RUN_FILES = ("config.yaml", "tokenizer.json")
HF_FILES = ("config.json", "generation_config.json")  # a pretrained model's safetensors export, as Transformers has it
MODEL_CLASS_KEYS = ("class_path", "import_path", "facts")  # a custom model's class, and the data's facts


@dataclass(frozen=True)
class ExportSource:
    """A checkpoint of a run, with what its model takes and gives."""

    run_dir: Path
    checkpoint_path: Path
    checkpoint_sha256: str
    checkpoint: TrainingCheckpoint
    model_io: ModelIO
    metrics: dict[str, Any]  # the run's final metrics (summary.json), {} before it has any

    def model(self) -> nn.Module:
        model = model_from_hparams(self.model_io.task, self.checkpoint.hparams)
        model.load_state_dict(plain_model_state(self.checkpoint.state_dict))
        return model.float().eval()


def export_model(source: ExportSource, fmt: str, out_dir: Path) -> Path:
    """Write the export into out_dir, replacing a previous one whole.

    The folder is written beside it and swapped in, under a lock on the folder above (one export into a
    place at a time), so a failed export (a full disk, a graph that does not match PyTorch) leaves the
    previous one as it was and no half-written folder behind."""
    out_dir = out_dir.expanduser().resolve()  # `out=.`, a symlink: the real place, never the link replaced
    check_replaceable(out_dir)
    check_writable(out_dir.parent, "export folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.with_name(f"{out_dir.name}.{os.getpid()}.partial")
    previous = out_dir.with_name(f"{out_dir.name}.{os.getpid()}.previous")
    try:
        partial.mkdir()
        parity = _write_model(source, fmt, partial)
        for name in RUN_FILES:
            if (source.run_dir / name).is_file():
                shutil.copy2(source.run_dir / name, partial / name)
        manifest = _manifest(source, fmt, parity)
        (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _group_readable(partial)
        with _exclusive(out_dir):
            check_replaceable(out_dir)  # again: another export may have put something there meanwhile
            if out_dir.exists():
                out_dir.rename(previous)
            try:
                partial.rename(out_dir)
            except OSError:
                if previous.exists():
                    previous.rename(out_dir)  # the previous export back in its place
                raise
        shutil.rmtree(previous, ignore_errors=True)
    except (OSError, SafetensorError) as err:
        raise WriteFailed(f"cannot write the export {str(out_dir)!r}: {err}; the previous export, if any, "
                          "is unchanged: free space or fix permissions and export again") from None  # fmt: skip
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def check_replaceable(out_dir: Path) -> None:
    """Only an earlier export is replaced, and nothing inside one is written: out= naming the run itself, a
    folder above it, a folder of other files (a `model.json` of another program among them) or a folder
    inside an export (which the next export would sweep away) is refused."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{str(out_dir)!r} is a file, not an export folder; move it away or choose another out=")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _is_an_export(out_dir):
        raise UserError(f"out={str(out_dir)!r} holds files and is not an earlier export, so it is not replaced; "
                        "choose a new or empty folder")  # fmt: skip
    for parent in out_dir.parents:
        if _is_an_export(parent):
            raise UserError(f"out={str(out_dir)!r} is inside the export {str(parent)!r}, which the next export "
                            "replaces whole; choose a folder outside it")  # fmt: skip


# Everything an export folder holds: a folder with anything else in it is not one.
EXPORT_ENTRIES = {*MODEL_FILES.values(), MODEL_FILE, MANIFEST_FILE, *RUN_FILES, *HF_FILES}


def _is_an_export(folder: Path) -> bool:
    try:
        names = {entry.name for entry in folder.iterdir()}
    except OSError:
        return False
    marked = (folder / MANIFEST_FILE).is_file() or (folder / MODEL_FILE).is_file()  # model.json: older exports
    return marked and names <= EXPORT_ENTRIES


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """An flock on the folder above out_dir while the export is swapped in: two exports into one place at
    once would otherwise move each other's folders. The second is told, not made to wait."""
    descriptor = os.open(out_dir.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another export into {str(out_dir.parent)!r} is being written; wait for it and "
                            "export again") from None  # fmt: skip
        yield
    finally:
        os.close(descriptor)


def _write_model(source: ExportSource, fmt: str, folder: Path) -> float | None:
    """The model file of the format; for a graph, the largest difference from PyTorch on sample inputs."""
    model = source.model()
    path = folder / MODEL_FILES[fmt]
    if fmt == "safetensors":
        hparams, step = source.checkpoint.hparams, source.checkpoint.global_step
        if hparams["family"] == "huggingface":
            # config.json and model.safetensors in Transformers' own layout: `from_pretrained(folder)` loads it.
            from trainer.models.pretrained import quiet_transformers

            with quiet_transformers():
                model.hf.save_pretrained(str(folder), safe_serialization=True)
        else:
            # Tied weights stored once; the ModelIO in the file's metadata is what predict checks manifest.json against.
            save_model(model, str(path), metadata={SEAL_KEY: seal(source.model_io)})
        description = {"task": source.model_io.task, "family": hparams["family"],
                       "model_kwargs": hparams["model_kwargs"], "global_step": step,
                       **{key: hparams[key] for key in MODEL_CLASS_KEYS if hparams.get(key)}}  # fmt: skip
        (folder / MODEL_FILE).write_text(json.dumps(description, indent=2) + "\n")
        return None
    if fmt == "onnx":
        import onnxruntime

        write_onnx(model, source.model_io, path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [spec.name for spec in source.model_io.inputs]

        def run_onnx(*arrays: Any) -> Any:
            return session.run(None, dict(zip(names, arrays, strict=True)))[0]

        return check_parity(model, source.model_io, run_onnx, "ONNX")
    write_torchscript(model, source.model_io, path)
    graph = torch.jit.load(str(path))

    def run_torchscript(*arrays: Any) -> Any:
        with torch.no_grad():
            return graph(*map(torch.from_numpy, arrays)).numpy()

    return check_parity(model, source.model_io, run_torchscript, "TorchScript")


def _manifest(source: ExportSource, fmt: str, parity: float | None) -> dict[str, Any]:
    tokenizer = "tokenizer.json" if (source.run_dir / "tokenizer.json").is_file() else None
    manifest: dict[str, Any] = {
        "format": fmt,
        "files": {"model": MODEL_FILES[fmt], "tokenizer": tokenizer, "config": "config.yaml"},
        **source.model_io.to_json(),
        "source": {
            "run_dir": str(source.run_dir),
            "checkpoint": str(source.checkpoint_path),
            "checkpoint_sha256": source.checkpoint_sha256,
            "global_step": source.checkpoint.global_step,
        },
        "model": _model_origin(source.checkpoint.hparams),
        "metrics": source.metrics,
        # The run's summary, not an evaluation of this checkpoint (`trainer test` gives that).
        "metrics_from": "the run's summary.json: val/* after its last step, test/* of its best checkpoint",
        "versions": _versions(fmt),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if parity is not None:
        manifest["parity"] = {"max_abs_difference": parity, "atol": ATOL, "rtol": RTOL, "against": "PyTorch float32"}
    return manifest


def _model_origin(hparams: dict[str, Any]) -> dict[str, Any]:
    """Which code builds the model: a shipped family, a custom class (by path), or a Transformers config."""
    origin: dict[str, Any] = {"family": hparams["family"]}
    if hparams.get("class_path"):
        origin.update(class_path=hparams["class_path"], import_path=hparams.get("import_path"))
    if hparams["family"] == "huggingface":
        origin["model_type"] = hparams["model_kwargs"]["config"].get("model_type")
    return origin


def _versions(fmt: str) -> dict[str, str]:
    packages = ["trainer", "torch", "safetensors", "tokenizers", "transformers"]
    if fmt == "onnx":
        packages += ["onnx", "onnxruntime", "onnxscript"]
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _group_readable(folder: Path) -> None:
    """safetensors (and torch) write some files 0600; an export is shared like the rest of the run folder."""
    mode = 0o666 & ~_umask()
    for path in folder.iterdir():
        os.chmod(path, mode)


def load_exported(folder: str | Path) -> nn.Module:
    """The plain `nn.Module` of a safetensors export: no Lightning, no DeepSpeed."""
    folder = Path(folder)
    description = json.loads((folder / MODEL_FILE).read_text())
    model = model_from_hparams(description["task"], description)
    if description["family"] == "huggingface":
        model.load_pretrained(str(folder), local_files_only=True)
    else:
        load_model(model, str(folder / WEIGHTS_FILE))
    return model.eval()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
