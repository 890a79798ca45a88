"""Data modules: they know `datasets` and `tokenizers`, not models."""

from trainer.data.base import RecipeDataModule
from trainer.data.image import ImageDataModule
from trainer.data.lm import LanguageModelingDataModule
from trainer.data.text import TextClassificationDataModule

DATA_MODULES: dict[str, type[RecipeDataModule]] = {
    "image_classification": ImageDataModule,
    "text_classification": TextClassificationDataModule,
    "language_modeling": LanguageModelingDataModule,
}

__all__ = ["DATA_MODULES", "RecipeDataModule"]
