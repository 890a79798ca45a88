"""Recipes -> one validated `RunConfig` (no torch import here)."""

from trainer.config.load import load_config, load_config_file, shipped_recipes, to_yaml
from trainer.config.schema import RunConfig

__all__ = ["RunConfig", "load_config", "load_config_file", "shipped_recipes", "to_yaml"]
