"""Image classification data: decoded once into memory (trainer.data.decoded) or per batch, normalised per batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from trainer.data.base import LabelMap, RecipeDataModule, label_map
from trainer.data.decoded import MAX_IN_MEMORY_BYTES, decode
from trainer.data.sources import Splits
from trainer.errors import UserError
from trainer.pixels import uint8_image


@dataclass(frozen=True)
class ImageTransform:
    """A batch of PIL images or arrays -> float (N, C, H, W) normalised pixels, plus int64 class ids."""

    image_column: str
    label_column: str
    mean: float
    std: float
    labels: LabelMap
    size: tuple[int, int] | None = None
    channels: int | None = None

    def arrays(self, images: list[Any]) -> list[np.ndarray]:
        return [uint8_image(image, self.size, self.channels) for image in images]

    def __call__(self, batch: dict[str, list]) -> dict:
        arrays = self.arrays(batch[self.image_column])
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise MixedSizes(shapes)
        pixels = torch.from_numpy(np.stack(arrays)).float().div_(255.0)
        pixels = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2)  # grey or HWC colour
        labels = torch.as_tensor(self.labels.ids(batch[self.label_column]), dtype=torch.long)
        return {"pixels": (pixels - self.mean) / self.std, "labels": labels}

    def tag(self) -> str:
        """Names what the decoded bytes depend on, for their cache."""
        return f"{self.size}-{self.channels}-{self.labels.tag()}"


class MixedSizes(UserError):
    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__(
            f"the images differ in size or channels ({describe_shapes(shapes)}); set data.image_size=[height, width] "
            "(and data.image_channels=1 or 3) to resize them all"
        )


def describe_shapes(shapes: set[tuple[int, ...]], most: int = 4) -> str:
    def one(shape: tuple[int, ...]) -> str:
        return f"{shape[0]}x{shape[1]}" + (f"x{shape[2]}" if len(shape) > 2 else "")

    listed = sorted(shapes)
    return ", ".join(one(s) for s in listed[:most]) + (", ..." if len(listed) > most else "")


SIZE_SAMPLE = 512  # images of each split whose sizes are checked when the splits are not decoded into memory


class ImageDataModule(RecipeDataModule):
    def process(self, splits: Splits) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset | None]:
        cfg = self.cfg
        for column in (cfg.image_column, cfg.label_column):
            if column not in splits.train.column_names:
                key = "data.image_column" if column == cfg.image_column else "data.label_column"
                raise UserError(f"data set has no column {column!r} (it has {splits.train.column_names}); set {key}")
        self.labels = label_map(splits, cfg.label_column)
        transform = ImageTransform(cfg.image_column, cfg.label_column, cfg.normalize_mean, cfg.normalize_std,
                                   self.labels, cfg.image_size, cfg.image_channels)  # fmt: skip
        self._sample = self._first_image(splits.train, transform)
        present = (splits.train, splits.val, splits.test)
        if self._in_memory(present):
            decoded = [decode(s, transform, self.cache_dir) if s is not None else None for s in present]
            self._check_one_size({d.pixels.shape[1:] for d in decoded if d is not None and len(d)})
            return tuple(decoded)
        self._check_one_size(self._sampled_shapes(present, transform))
        return tuple(s.with_transform(transform) if s is not None else None for s in present)

    def _check_one_size(self, shapes: set[tuple[int, ...]]) -> None:
        """Every split's images as one size and mode, or one line naming the sizes found and the setting."""
        if len(shapes) > 1:
            raise MixedSizes({(s[1], s[2], s[0]) if s[0] != 1 else (s[1], s[2]) for s in shapes})

    def _sampled_shapes(self, splits: tuple[datasets.Dataset | None, ...], transform: ImageTransform) -> set:
        """(C, H, W) of the first images of each split: a per-batch path cannot afford to decode them all first."""
        shapes = set()
        for split in splits:
            if split is None or len(split) == 0:
                continue
            head = split.select(range(min(SIZE_SAMPLE, len(split))))[transform.image_column]
            for array in transform.arrays(head):
                shapes.add((1, *array.shape) if array.ndim == 2 else (array.shape[2], *array.shape[:2]))
        return shapes

    def _in_memory(self, splits: tuple[datasets.Dataset | None, ...]) -> bool:
        if self.cfg.in_memory is not None:
            return self.cfg.in_memory
        if self._sample is None:
            return False
        images = sum(len(s) for s in splits if s is not None)
        return images * self._sample[0].numel() <= MAX_IN_MEMORY_BYTES  # uint8: a byte per value

    @staticmethod
    def collate_fn(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def _first_image(self, train: datasets.Dataset, transform: Any) -> torch.Tensor | None:
        if len(train) == 0:
            return None  # check_trainable says so
        try:
            return transform(train[:1])["pixels"]
        except (TypeError, ValueError, OSError) as err:
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
        return {"num_classes": self.labels.num_classes, "in_channels": channels, "image_size": self._image_size(),
                "label_names": self.labels.names}  # fmt: skip

    def inference_facts(self) -> dict[str, Any]:
        self.load()
        channels = int(self._sample.shape[1])
        return {"image_size": self._image_size(), "channels": channels, "label_names": self.labels.names}

    def _image_size(self) -> list[int]:
        return [int(side) for side in self._sample.shape[2:]] if self._sample is not None else [0, 0]
