"""trainer: train CNN, LSTM and Transformer models from one YAML recipe.

The import is kept light (no torch) so that `trainer config` and config errors answer fast;
the training entry points live in `trainer.api`.
"""

__version__ = "0.1.0"
