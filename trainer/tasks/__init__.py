"""LightningModules by task: they know models and metrics, not data sources, launchers or the CLI."""

from trainer.tasks.base import Task
from trainer.tasks.classification import ImageClassificationTask, TextClassificationTask
from trainer.tasks.language_modeling import CausalLMTask

TASKS: dict[str, type[Task]] = {
    "image_classification": ImageClassificationTask,
    "text_classification": TextClassificationTask,
    "language_modeling": CausalLMTask,
}

__all__ = ["TASKS", "CausalLMTask", "ImageClassificationTask", "Task", "TextClassificationTask"]
