"""Export a trained model so that it loads without the framework: `model.safetensors` plus `model.json`
(what to build) beside the run's config and tokenizer. Loading it needs torch, safetensors and
`trainer.models` only: no Lightning, no DeepSpeed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from trainer.errors import UserError, WriteFailed
from trainer.lifecycle.checkpoints import TrainingCheckpoint, plain_model_state
from trainer.models import build_model
from trainer.writable import check_writable

EXPORT_DIR = "export"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
RUN_FILES = ("config.yaml", "tokenizer.json")


def export_model(task: str, checkpoint: TrainingCheckpoint, run_dir: Path, out_dir: Path) -> Path:
    """Write out_dir/{model.safetensors, model.json, config.yaml, tokenizer.json}.

    The folder is written beside the old export and swapped in whole, so a failed export (a full disk)
    leaves the previous one as it was and no half-written folder behind."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{str(out_dir)!r} is a file, not an export folder; move it away and export again")
    check_writable(out_dir.parent, "the export folder")
    family, kwargs = checkpoint.hparams["family"], checkpoint.hparams["model_kwargs"]
    model = build_model(task, family, **kwargs)
    model.load_state_dict(plain_model_state(checkpoint.state_dict))
    partial = out_dir.with_name(f"{out_dir.name}.{os.getpid()}.partial")
    try:
        partial.mkdir()
        save_model(model, str(partial / WEIGHTS_FILE))  # handles tied weights (one copy stored)
        os.chmod(partial / WEIGHTS_FILE, 0o666 & ~_umask())  # safetensors writes 0600; the rest of the folder is not
        description = {"task": task, "family": family, "model_kwargs": kwargs, "global_step": checkpoint.global_step}
        (partial / MODEL_FILE).write_text(json.dumps(description, indent=2) + "\n")
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, partial / name)
        previous = out_dir.with_name(f"{out_dir.name}.{os.getpid()}.previous")
        if out_dir.exists():
            out_dir.rename(previous)
        partial.rename(out_dir)
        shutil.rmtree(previous, ignore_errors=True)
    except (OSError, SafetensorError) as err:
        raise WriteFailed(f"cannot write the export {str(out_dir)!r}: {err}; the previous export, if any, "
                                    "is unchanged: free space and export again") from None  # fmt: skip
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def load_exported(folder: str | Path) -> nn.Module:
    """The plain `nn.Module` of an export: no Lightning, no DeepSpeed."""
    folder = Path(folder)
    description = json.loads((folder / MODEL_FILE).read_text())
    model = build_model(description["task"], description["family"], **description["model_kwargs"])
    load_model(model, str(folder / WEIGHTS_FILE))
    return model.eval()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
