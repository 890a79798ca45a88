"""Export a trained model so that it loads without the framework: `model.safetensors` plus `model.json`
(what to build) beside the run's config and tokenizer. Loading it needs torch, safetensors and
`trainer.models` only: no Lightning, no DeepSpeed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from trainer.lifecycle.checkpoints import TrainingCheckpoint, plain_model_state
from trainer.models import build_model

EXPORT_DIR = "export"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
RUN_FILES = ("config.yaml", "tokenizer.json")


def export_model(task: str, checkpoint: TrainingCheckpoint, run_dir: Path, out_dir: Path) -> Path:
    """Write out_dir/{model.safetensors, model.json, config.yaml, tokenizer.json}."""
    family, kwargs = checkpoint.hparams["family"], checkpoint.hparams["model_kwargs"]
    model = build_model(task, family, **kwargs)
    model.load_state_dict(plain_model_state(checkpoint.state_dict))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out_dir / WEIGHTS_FILE))  # handles tied weights (one copy stored)
    description = {"task": task, "family": family, "model_kwargs": kwargs, "global_step": checkpoint.global_step}
    (out_dir / MODEL_FILE).write_text(json.dumps(description, indent=2) + "\n")
    for name in RUN_FILES:
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
