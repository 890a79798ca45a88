"""New inputs made into the tensors the model was trained on: images decoded, converted, resized and normalised
as in training (trainer.data.image), texts tokenised with the run's tokenizer and padded per batch
(trainer.data.text). numpy, Pillow and tokenizers only."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import UserError
from trainer.files import refuse_special
from trainer.model_io import UNKNOWN_TOKENS
from trainer.pixels import uint8_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def expand_images(words: list[str]) -> list[str]:
    """Image files as given; a folder stands for the image files in it, sorted by name."""
    paths: list[str] = []
    for word in words:
        path = Path(word).expanduser()
        if not word.strip():  # Path("") is the working directory
            raise UserError("an input is empty; give image files or folders of them")
        refuse_special(path, "input")
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for image in found:
                refuse_special(Path(image), "input")
            if not found:
                raise UserError(f"folder {word!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif path.is_file():
            paths.append(word)
        else:
            raise UserError(f"{word!r} is not an image file or folder; this model classifies images: give PNG or "
                            "JPEG files")  # fmt: skip
    return paths


def image_batch(paths: list[str], preprocess: dict[str, Any]) -> np.ndarray:
    """Float32 (N, C, H, W): decoded, in the training images' mode and size, scaled to [0, 1] and normalised."""
    from PIL import Image, UnidentifiedImageError

    if preprocess["channels"] not in (1, 3):
        raise UserError(f"this export takes {preprocess['channels']}-channel images, which predict cannot make")
    height, width = preprocess["image_size"]
    arrays = []
    for path in paths:
        try:
            with warnings.catch_warnings(), Image.open(path) as image:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a big photo, resized anyway
                arrays.append(uint8_image(image, (height, width), preprocess["channels"]))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            reason = "not an image Pillow can read" if isinstance(err, UnidentifiedImageError) else err
            raise UserError(f"cannot read image {path!r} ({reason}); give PNG or JPEG files") from None
    pixels = np.stack(arrays).astype(np.float32) / 255.0
    pixels = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
    return ((pixels - preprocess["mean"]) / preprocess["std"]).astype(np.float32)


def expand_texts(words: list[str]) -> list[str]:
    """Each word is a text, or the path of a text file with one text per line (blank lines skipped)."""
    texts: list[str] = []
    for word in words:
        path = Path(word).expanduser()
        if not word.strip():  # before the path tests: Path("") is the working directory
            raise UserError("an input text is empty; give some text (or a file with one example per line)")
        refuse_special(path, "input")
        if path.is_file():
            try:
                lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise UserError(f"cannot read text file {word!r} ({err}); give UTF-8 text, one per line") from None
            if not lines:
                raise UserError(f"text file {word!r} holds no text; give one example per line")
            texts += lines
        elif path.is_dir():
            raise UserError(f"{word!r} is a folder; give texts, or text files with one example per line")
        else:
            texts.append(word)
    return texts


def load_tokenizer(path: Path | None) -> Any:
    from tokenizers import Tokenizer

    if path is None:
        raise UserError("this model reads text, but its folder has no tokenizer.json; export the run again")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises its own untyped Exception
        raise UserError(f"the tokenizer {str(path)!r} cannot be read ({str(err).splitlines()[0][:120]})") from None


def text_batch(tokenizer: Any, texts: list[str], preprocess: dict[str, Any]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (N, T) int64, truncated to data.max_length, padded to the batch's longest."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(preprocess["max_length"])
    encodings = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
    longest = max(1, *(len(ids) for ids in encodings))
    input_ids = np.full((len(texts), longest), preprocess["pad_id"], dtype=np.int64)
    attention_mask = np.zeros((len(texts), longest), dtype=np.int64)
    for row, ids in enumerate(encodings):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def prompt_ids(tokenizer: Any, prompt: str) -> tuple[list[int], list[str]]:
    """The prompt's token ids without those the model never saw (they would reach it as [UNK]), and what was
    dropped (also said on stderr); a prompt with nothing left is an error."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if not prompt:
        raise UserError("a prompt is empty; give some text to continue")
    encoding = tokenizer.encode(prompt)
    unknown = next((i for i in map(tokenizer.token_to_id, UNKNOWN_TOKENS) if i is not None), None)
    dropped = sorted({prompt[start:end] for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True)
                      if token == unknown})  # fmt: skip
    ids = [token for token in encoding.ids if token != unknown]
    if not ids:
        raise UserError(f"prompt {prompt!r} holds nothing the model has seen; give a prompt in its alphabet")
    if dropped:
        print(f"trainer: left out of the prompt, never seen in training: {' '.join(map(repr, dropped))}",
              file=sys.stderr, flush=True)  # fmt: skip
    return ids, dropped
