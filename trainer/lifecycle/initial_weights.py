"""The weights a new run starts from, when not from scratch: a pretrained Transformers folder
(`model.family=huggingface`) or an earlier run's weights (`init_from`, a warm start). Layers whose shape differs
(a head for another class count) start fresh, and the run says which. A resumed run starts from its checkpoint
instead, and never comes here."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from trainer.config.schema import RunConfig
from trainer.data.tokenizer import TOKENIZER_FILE
from trainer.errors import UserError
from trainer.export.folder import MODEL_FILE as MODEL_JSON
from trainer.export.folder import WEIGHTS_FILE as WEIGHTS
from trainer.lifecycle.checkpoints import plain_model_state, read_training_checkpoint
from trainer.lifecycle.run_dir import CHECKPOINTS, CONFIG_FILE, LAST_CKPT, run_dir_of

HF_CONFIG = "config.json"  # a Transformers folder's (an export of a huggingface run is one)


def load_initial_weights(cfg: RunConfig, model: nn.Module) -> str | None:
    """Load the pretrained weights, then the warm-start ones over them, into `model`; a line saying what was loaded
    (None: nothing)."""
    said = []
    if cfg.model.family == "huggingface":
        fresh = model.load_pretrained(cfg.model.pretrained, cfg.model.local_files_only)
        said.append(f"pretrained weights from {cfg.model.pretrained}{_fresh(fresh)}")
    if cfg.init_from is not None:
        said.append(_warm_start(cfg, model))
    return "; then ".join(said) or None


def warm_start_tokenizer(cfg: RunConfig) -> Path | None:
    """The tokenizer of the run `init_from` names: a text model's embeddings hold rows by its token ids, so a
    warm-started run reads its data with that tokenizer, not a new one (None: the source has none)."""
    if cfg.init_from is None:
        return None
    kind, target = _source(Path(cfg.init_from).expanduser(), cfg.init_from)
    folder = target if kind == "export" else run_dir_of(target) or target.resolve().parent.parent
    tokenizer = folder / TOKENIZER_FILE
    return tokenizer if tokenizer.is_file() else None


def _warm_start(cfg: RunConfig, model: nn.Module) -> str:
    assert cfg.init_from is not None
    state = warm_start_state(Path(cfg.init_from).expanduser())
    own = model.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    if not usable:
        raise UserError(f"init_from={cfg.init_from!r}: none of its weights fit this model (names or shapes differ); "
                        "give weights of the same model family and sizes")  # fmt: skip
    model.load_state_dict(usable, strict=False)
    fresh = [key for key in own if key not in usable]
    return f"weights from {cfg.init_from} ({len(usable)} of {len(own)} tensors){_fresh(fresh)}"


def check_init_from(cfg: RunConfig) -> None:
    """Before anything is written: init_from names something that holds weights (a resumed run goes on from
    its checkpoint: its init_from is a record only)."""
    if cfg.init_from is not None and cfg.resume is None:
        _source(Path(cfg.init_from).expanduser(), cfg.init_from)


def warm_start_state(path: Path) -> dict[str, torch.Tensor]:
    """The plain model's state dict of an export folder, a run directory or a checkpoint."""
    kind, target = _source(path, str(path))
    if kind == "export":
        from safetensors.torch import load_file

        state = load_file(str(target / WEIGHTS))
        description = json.loads((target / MODEL_JSON).read_text()) if (target / MODEL_JSON).is_file() else {}
        if description.get("family") == "huggingface" or (target / HF_CONFIG).is_file():
            state = {f"hf.{key}": value for key, value in state.items()}  # Transformers' keys, inside the wrapper
        return state
    return plain_model_state(read_training_checkpoint(target).state_dict)


def _source(path: Path, given: str) -> tuple[str, Path]:
    if not path.exists():
        raise UserError(f"init_from={given!r} does not exist; give an export folder, a run directory or a checkpoint")
    if not (path.is_file() or path.is_dir()):  # a FIFO would block the read forever, a device never end
        raise UserError(f"init_from={given!r} is not a regular file or folder; give an export folder, a run directory "
                        "or a checkpoint")  # fmt: skip
    if path.is_dir() and any((path / name).is_file() for name in ("model.onnx", "model.pt")):
        raise UserError(f"init_from={given!r} is a graph export, which holds no trainable weights; give the run "
                        "directory or its safetensors export")  # fmt: skip
    if path.is_dir() and (path / WEIGHTS).is_file():
        return "export", path
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        last = path / CHECKPOINTS / LAST_CKPT
        if not last.exists():
            raise UserError(f"init_from={given!r} is a run directory without {CHECKPOINTS}/{LAST_CKPT}; train it first")
        return "checkpoint", last
    return "checkpoint", path  # a Lightning file or a DeepSpeed folder (read_training_checkpoint checks which)


def _fresh(names: list[str], most: int = 4) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
    return f"; starting fresh: {shown}"
