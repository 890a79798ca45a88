"""Reading training checkpoints, whatever wrote them, and exporting a model that loads without them.

A checkpoint is a Lightning file (auto, DDP) or a DeepSpeed directory (ZeRO shards). Both load with
`weights_only=True`; DeepSpeed's own `zero_to_fp32` consolidates the shards. An export is
`model.safetensors` plus `model.json` (what to build) beside the run's config and tokenizer: loading it
needs torch, safetensors and `trainer.models` only.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from trainer.distributed.deepspeed_checkpoint import LATEST, is_deepspeed_checkpoint
from trainer.errors import UserError
from trainer.models import build_model

EXPORT_DIR = "export"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
MODEL_PREFIX = "model."  # the plain model's attribute name in every task module


@dataclass
class TrainingCheckpoint:
    hparams: dict[str, Any]  # the task's constructor arguments (family, model_kwargs, ...)
    state_dict: dict[str, torch.Tensor]  # the task module's full-precision weights
    global_step: int


def read_training_checkpoint(path: Path) -> TrainingCheckpoint:
    """A Lightning checkpoint file or a DeepSpeed checkpoint directory, consolidated; clear errors otherwise."""
    if path.is_dir():
        return _read_deepspeed(path)
    checkpoint = _lightning_checkpoint(path)
    return TrainingCheckpoint(
        checkpoint["hyper_parameters"], checkpoint["state_dict"], checkpoint.get("global_step", 0)
    )


def check_resumable(path: Path) -> None:
    """A checkpoint to resume from loads: clear error now, before any work, not deep inside Lightning.

    A file is opened memory-mapped, so its tensors are not read here (Lightning reads them once, when it
    restores); a truncated file still fails, since its zip directory sits at the end. A DeepSpeed
    directory must hold DeepSpeed's `latest` marker.
    """
    if path.is_dir():
        if not is_deepspeed_checkpoint(path):
            raise UserError(f"checkpoint {str(path)!r} is an incomplete DeepSpeed checkpoint; resume from another run")
        return
    _lightning_checkpoint(path, mmap=True)


def _lightning_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    checkpoint = _torch_load(path, mmap)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise UserError(f"checkpoint {str(path)!r} was not written by `trainer fit`; give another ckpt")
    return checkpoint


def _torch_load(path: Path, mmap: bool = False) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types (EOFError, RuntimeError, UnpicklingError, ...)
        raise UserError(
            f"checkpoint {str(path)!r} cannot be loaded ({type(err).__name__}); it is truncated, corrupt "
            "or not a trainer checkpoint: give another ckpt"
        ) from None


def _read_deepspeed(path: Path) -> TrainingCheckpoint:
    if not is_deepspeed_checkpoint(path):
        raise UserError(f"checkpoint {str(path)!r} is a folder but not a DeepSpeed checkpoint; give another ckpt")
    tag = (path / LATEST).read_text().strip()
    states = sorted((path / tag).glob("*mp_rank_00_model_states.pt"))
    if not states:
        raise UserError(f"DeepSpeed checkpoint {str(path)!r} has no model states; it is incomplete")
    client_state = _torch_load(states[0])  # Lightning's part: hyperparameters, loops, callbacks
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        state_dict = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise UserError(f"DeepSpeed checkpoint {str(path)!r} cannot be consolidated: {err}") from None
    return TrainingCheckpoint(client_state["hyper_parameters"], state_dict, client_state.get("global_step", 0))


def plain_model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(MODEL_PREFIX): v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}


def export_model(task: str, checkpoint: TrainingCheckpoint, run_dir: Path, out_dir: Path) -> Path:
    """Write out_dir/{model.safetensors, model.json, config.yaml, tokenizer.json}."""
    family, kwargs = checkpoint.hparams["family"], checkpoint.hparams["model_kwargs"]
    model = build_model(task, family, **kwargs)
    model.load_state_dict(plain_model_state(checkpoint.state_dict))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out_dir / WEIGHTS_FILE))  # handles tied weights (one copy stored)
    description = {"task": task, "family": family, "model_kwargs": kwargs, "global_step": checkpoint.global_step}
    (out_dir / MODEL_FILE).write_text(json.dumps(description, indent=2) + "\n")
    for name in ("config.yaml", "tokenizer.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
    return out_dir


def load_exported(folder: str | Path) -> nn.Module:
    """The plain `nn.Module` of an export: no Lightning, no DeepSpeed."""
    folder = Path(folder)
    description = json.loads((folder / MODEL_FILE).read_text())
    model = build_model(description["task"], description["family"], **description["model_kwargs"])
    load_model(model, str(folder / WEIGHTS_FILE))
    return model.eval()
