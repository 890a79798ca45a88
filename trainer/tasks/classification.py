"""Image and text classification: cross-entropy, accuracy and macro precision/recall/F1 from torchmetrics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from trainer.tasks.base import Task


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class ClassificationTask(Task):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        num_classes = self.data_fact("num_classes")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # The test's predictions by class, which fit saves for `trainer report` (trainer/report/saved_confusion.py).
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion_counts: list[list[int]] | None = None

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(*self.model_inputs(batch))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.logits(batch)
        loss = F.cross_entropy(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        # This rank's batch, as train/loss is (micro accuracy, as val/acc): the report draws them together.
        self.log("train/acc", (logits.detach().argmax(-1) == batch["labels"]).float().mean())
        return loss  # checked for NaN by trainer.lifecycle.divergence

    def _evaluate(
        self,
        batch: dict[str, torch.Tensor],
        stage: str,
        metrics: MetricCollection,
        mean_loss: MeanMetric,
        confusion: MulticlassConfusionMatrix | None = None,
    ) -> None:
        # Padding rows of a sharded evaluation set (sample_mask False) count in no metric; torchmetrics
        # then syncs sums and counts across ranks, so the values equal single-process ones.
        real = batch["sample_mask"]
        logits, labels = self.logits(batch)[real], batch["labels"][real]
        if labels.numel():
            metrics.update(logits, labels)
            mean_loss.update(F.cross_entropy(logits, labels, reduction="none"))
            if confusion is not None:
                confusion.update(logits.argmax(dim=-1), labels)
        self.log(f"{stage}/loss", mean_loss, prog_bar=True)
        self.log_dict(metrics)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics, self.val_loss)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics, self.test_loss, self.test_confusion)

    def on_test_epoch_end(self) -> None:
        # On every rank: compute() sums the counts across them.
        self.test_confusion_counts = self.test_confusion.compute().cpu().tolist()
        self.test_confusion.reset()


class ImageClassificationTask(ClassificationTask):
    task_name = "image_classification"

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return (batch["pixels"],)


class TextClassificationTask(ClassificationTask):
    task_name = "text_classification"

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return batch["input_ids"], batch["attention_mask"]
