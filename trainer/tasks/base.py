"""What every task shares: building its model from plain arguments, and its optimizer and schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from trainer.distributed.fsdp import ModelSharding
from trainer.flops import portable_kernels
from trainer.models import model_from_hparams
from trainer.tasks.optim import OptimizerFactory, Schedule, build_optimizer, build_scheduler, keep_kernel_choice

TASK_KEY = "trainer_task"  # the task a checkpoint was trained for, beside Lightning's own keys


class Task(L.LightningModule):
    """A LightningModule around one plain model. Hyperparameters are plain data, so a checkpoint
    describes its own model and loads with `weights_only=True`."""

    task_name: str

    def __init__(
        self,
        family: str,
        model_kwargs: dict[str, Any],
        optim: dict[str, Any],
        scheduler: dict[str, Any],
        schedule_steps: int = 1,
        class_path: str | None = None,
        import_path: str | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        """`schedule_steps`: optimizer steps the learning-rate schedule spans (the run's total). `class_path` and
        `import_path`: a custom model's class. `facts`: the data's (classes, vocabulary, image size), which a
        custom model's constructor need not take."""
        super().__init__()
        self.save_hyperparameters()
        self.model = model_from_hparams(self.task_name, self.hparams)
        # Not hyperparameters: what builds the optimizer when a strategy needs its own, and what shards the model
        # under FSDP2 (see build.py).
        self.optimizer_factory: OptimizerFactory | None = None
        self.model_sharding: ModelSharding | None = None

    def configure_model(self) -> None:
        # Lightning's hook for sharding, called once the processes and the device mesh exist (ModelParallelStrategy
        # requires it); FSDP2 is applied from outside the model (trainer/distributed/fsdp.py).
        if self.model_sharding is not None:
            self.model_sharding(self.model, self.device_mesh)

    def data_fact(self, name: str) -> Any:
        """A fact of the data the model was built for (a checkpoint from before `facts` has it in model_kwargs)."""
        facts = self.hparams.get("facts") or {}
        return facts[name] if name in facts else self.hparams.model_kwargs[name]

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """What the plain model is called with, from a batch of the task's data module."""
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Only Lightning's model summary calls this (training calls the model directly): with portable
        kernels, so that its FLOP counter sees the LSTM's matmuls too."""
        with portable_kernels():
            return self.model(*inputs)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.model, self.hparams.optim, self.optimizer_factory)
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, self.hparams.schedule_steps)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning's mixed-precision plugin refuses to clip for any fused optimizer, since with a GradScaler
        # a fused step unscales the gradients itself (lightning/pytorch/plugins/precision/amp.py, 2.6). In
        # bf16-mixed there is no GradScaler and nothing to unscale, so clip here as Lightning would.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if gradient_clip_val and getattr(optimizer, "defaults", {}).get("fused") and scaler is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TASK_KEY] = self.task_name

    def on_train_start(self) -> None:
        # Lightning has restored a resumed run's schedule by now, with the total it was started with.
        for config in self.trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                if isinstance(schedule, Schedule):
                    schedule.extend_to(self.hparams.schedule_steps, self.global_step)
        # ... and the optimizer's param groups with the kernel choice they were saved with (a run from before
        # optim.fused, or under another setting): this run's setting holds.
        for optimizer in self.trainer.optimizers:
            keep_kernel_choice(optimizer)
