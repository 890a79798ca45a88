"""Image splits decoded once into memory: a batch is then one index into a uint8 tensor.

Decoding at every batch (a PNG per MNIST image, datasets' row conversion per digits image) took 5-40% of
a CPU training step (benchmarks/data.py), and the GPU's short steps would wait on it far longer. The
decoded bytes are cached beside the tokenised text (by the split's fingerprint), so a second run reads
them instead of decoding again. Pixels stay uint8 (1 byte each) and are normalised per batch, exactly as
the per-batch path does, so both give bitwise the same batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data.base import cached_map

if TYPE_CHECKING:
    from trainer.data.image import ImageTransform

MAX_IN_MEMORY_BYTES = 2 * 1024**3  # data.in_memory=None decodes into memory up to this size


class DecodedImages(Dataset):
    """A split as a uint8 tensor (N, C, H, W) and int64 labels; rows come out as the per-batch path's do."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.pixels, self.labels, self.mean, self.std = pixels, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        pixels = (self.pixels[index].float().div_(255.0) - self.mean) / self.std
        return [{"pixels": p, "labels": label} for p, label in zip(pixels, self.labels[index], strict=True)]

    def unique(self, column: str) -> list[int]:
        """The distinct labels, as `datasets.Dataset.unique` gives them (the only column asked for)."""
        return self.labels.unique().tolist()


def decode(split: datasets.Dataset, transform: ImageTransform, cache_dir: Path) -> DecodedImages:
    """The split decoded into memory, resized and converted as `transform` asks. Its images must share one size
    (the caller checks the shape of every split; of mixed sizes only the first image's are kept here)."""

    def to_bytes(batch: dict[str, list]) -> dict[str, list]:
        arrays = transform.arrays(batch[transform.image_column])
        return {
            "pixels": [a.tobytes() for a in arrays],
            "shape": [list(a.shape) for a in arrays],
            "label": transform.labels.ids(batch[transform.label_column]),
        }

    tag = f"decoded-uint8-{transform.tag()}"
    table = cached_map(split, to_bytes, cache_dir, tag, split.column_names, desc="decoding images").data
    if len(table) == 0:
        return DecodedImages(torch.zeros(0, 1, 1, 1, dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
                             transform.mean, transform.std)  # fmt: skip
    shapes = {tuple(shape) for shape in table.column("shape").to_pylist()}
    if len(shapes) != 1:
        from trainer.data.image import MixedSizes

        raise MixedSizes(shapes)
    shape = shapes.pop()
    raw = np.frombuffer(b"".join(table.column("pixels").to_pylist()), dtype=np.uint8).reshape(len(table), *shape)
    pixels = torch.from_numpy(raw.copy())
    pixels = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2).contiguous()  # grey or HWC
    labels = torch.as_tensor(table.column("label").to_pylist(), dtype=torch.long)
    return DecodedImages(pixels, labels, transform.mean, transform.std)
