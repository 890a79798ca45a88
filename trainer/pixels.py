"""How a decoded image becomes 8-bit greyscale or RGB pixels: the same in training (trainer.data.image) and in
`trainer predict` (trainer.predict.inputs). Pillow and numpy only, so that predicting from an ONNX export needs
no torch."""

from __future__ import annotations

from typing import Any

import numpy as np

# Pillow's single-channel modes; every other mode (RGBA, P, CMYK, YCbCr, ...) becomes RGB.
GREY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def eight_bit(image: Any) -> Any:
    """16- and 32-bit greyscale scaled to 8 bits: Pillow's convert("L") clips them (40000 becomes 255)."""
    from PIL import Image

    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
    return Image.fromarray(np.clip(np.round(pixels * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")


def grey_or_rgb(image: Any) -> Any:
    """A Pillow image in mode L or RGB: a palette image's colours (not its indices), 16 bits scaled to 8,
    transparency dropped."""
    if image.mode in ("L", "RGB"):
        return image
    image = eight_bit(image)
    return image.convert("L" if image.mode in GREY_MODES else "RGB")


def uint8_image(image: Any, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, C), converted to `channels` and resized to `size` (height, width)
    where asked, as `trainer predict` does it (Pillow, bilinear). A decoded file in another mode becomes
    greyscale or RGB even unasked, as predict makes it: a palette PNG's pixels are colours, not its indices, a
    16-bit one is scaled to 8 bits, and transparency is dropped."""
    from PIL import Image

    if isinstance(image, Image.Image):
        image = grey_or_rgb(image)
    if size is None and channels is None:
        return np.asarray(image, dtype=np.uint8)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if channels is not None:
        image = image.convert({1: "L", 3: "RGB"}[channels])
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
