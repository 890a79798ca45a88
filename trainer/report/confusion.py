"""A classifier's confusion matrix on its evaluation split, from a checkpoint and the run's own config.

The one part of `trainer report` that needs torch: the model is built from the checkpoint and the data
from the run's saved config.yaml, the way `trainer test` does it (trainer.api.test), and torchmetrics counts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from trainer.api import saved_tokenizer, task_from_checkpoint
from trainer.build import build_datamodule
from trainer.config import load_config_file
from trainer.config.model_args import model_kwargs
from trainer.data.sources import check_source
from trainer.distributed.batching import plan_batches
from trainer.lifecycle.checkpoints import read_info, verify_checkpoint
from trainer.lifecycle.run_dir import CONFIG_FILE
from trainer.lifecycle.start import check_checkpoint_fits
from trainer.report.saved_confusion import Confusion, class_names


def confusion_matrix(run_dir: Path, checkpoint: Path) -> Confusion:
    """Evaluate `checkpoint` on the run's test split (its validation split when it has none), on one device:
    the GPU when there is one, else the CPU. Raises UserError when the checkpoint or the data are not usable
    (corrupt, another model, a data path that has moved)."""
    cfg = load_config_file(run_dir / CONFIG_FILE)
    verify_checkpoint(checkpoint)
    info = read_info(checkpoint)
    check_checkpoint_fits(cfg, info, checkpoint)  # the model first: the data may not even be of its kind
    check_source(cfg.data)
    plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, world_size=1)
    datamodule = build_datamodule(cfg, plan, tokenizer_path=saved_tokenizer(cfg, checkpoint))
    datamodule.load()
    check_checkpoint_fits(cfg, info, checkpoint, model_kwargs(cfg, datamodule.facts()))
    task = task_from_checkpoint(cfg, checkpoint)
    has_test = datamodule.test_set is not None
    loader = datamodule.test_dataloader() if has_test else datamodule.val_dataloader()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = task.data_fact("num_classes")
    counts = MulticlassConfusionMatrix(num_classes).to(device)
    task.to(device).eval()
    with torch.inference_mode():
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            real = batch["sample_mask"]  # padding rows of a sharded set (none on one process) count nowhere
            counts.update(task.logits(batch)[real].argmax(dim=-1), batch["labels"][real])
    names = class_names(datamodule.inference_facts().get("label_names"), num_classes)
    return Confusion(counts.compute().cpu().tolist(), names, "test" if has_test else "validation", checkpoint)
