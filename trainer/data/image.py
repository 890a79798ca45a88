"""Image classification data: decoded once into memory (trainer.data.decoded) or per batch, normalised per batch."""

from __future__ import annotations

from functools import partial
from typing import Any

import datasets
import numpy as np
import torch

from trainer.data.base import RecipeDataModule, class_count, label_names
from trainer.data.decoded import MAX_IN_MEMORY_BYTES, DecodedImages, decode
from trainer.data.sources import Splits
from trainer.errors import UserError


def to_tensors(batch: dict[str, list], image_column: str, label_column: str, mean: float, std: float) -> dict:
    """A batch of PIL images or arrays -> float (N, C, H, W) normalised pixels, plus int64 labels."""
    arrays = [np.asarray(image, dtype=np.uint8) for image in batch[image_column]]
    pixels = torch.from_numpy(np.stack(arrays)).float().div_(255.0)
    pixels = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2)  # grey or HWC colour
    return {"pixels": (pixels - mean) / std, "labels": torch.as_tensor(batch[label_column], dtype=torch.long)}


class ImageDataModule(RecipeDataModule):
    def process(self, splits: Splits) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset | None]:
        cfg = self.cfg
        for column in (cfg.image_column, cfg.label_column):
            if column not in splits.train.column_names:
                key = "data.image_column" if column == cfg.image_column else "data.label_column"
                raise UserError(f"data set has no column {column!r} (it has {splits.train.column_names}); set {key}")
        transform = partial(
            to_tensors,
            image_column=cfg.image_column,
            label_column=cfg.label_column,
            mean=cfg.normalize_mean,
            std=cfg.normalize_std,
        )
        self._num_classes = class_count(splits, cfg.label_column)
        self._label_names = label_names(splits, cfg.label_column)
        self._sample = self._first_image(splits.train, transform)
        present = (splits.train, splits.val, splits.test)
        if self._in_memory(present):
            decoded = [self._decoded(s) if s is not None else None for s in present]
            if all(d is not None for d, s in zip(decoded, present, strict=True) if s is not None):
                return tuple(decoded)
            if cfg.in_memory:
                raise UserError("data.in_memory=true needs images of one size; resize them or set data.in_memory=false")
        return tuple(s.with_transform(transform) if s is not None else None for s in present)

    def _in_memory(self, splits: tuple[datasets.Dataset | None, ...]) -> bool:
        if self.cfg.in_memory is not None:
            return self.cfg.in_memory
        if self._sample is None:
            return False
        images = sum(len(s) for s in splits if s is not None)
        return images * self._sample[0].numel() <= MAX_IN_MEMORY_BYTES  # uint8: a byte per value

    def _decoded(self, split: datasets.Dataset) -> DecodedImages | None:
        cfg = self.cfg
        return decode(split, cfg.image_column, cfg.label_column, self.cache_dir, cfg.normalize_mean, cfg.normalize_std)

    @staticmethod
    def collate_fn(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def _first_image(self, train: datasets.Dataset, transform: Any) -> torch.Tensor | None:
        if len(train) == 0:
            return None  # check_trainable says so
        try:
            return transform(train[:1])["pixels"]
        except (TypeError, ValueError) as err:
            raise UserError(
                f"data.image_column {self.cfg.image_column!r} does not hold images ({str(err).splitlines()[0]}); "
                "set data.image_column"
            ) from None

    @property
    def label_column(self) -> str:
        return self.cfg.label_column

    example_name = "images"

    def facts(self) -> dict[str, Any]:
        self.load()
        channels = int(self._sample.shape[1]) if self._sample is not None else 1
        return {"num_classes": self._num_classes, "in_channels": channels}

    def inference_facts(self) -> dict[str, Any]:
        self.load()
        channels, height, width = (int(size) for size in self._sample.shape[1:])
        return {"image_size": [height, width], "channels": channels, "label_names": self._label_names}
