"""Text classification data: a tokenizer trained on train, tokenised once (cached), padded per batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import torch
from tokenizers import Tokenizer

from trainer.data.base import RecipeDataModule, cached_map, label_map
from trainer.data.sources import Splits
from trainer.data.tokenizer import build_tokenizer, load_tokenizer, pad_token_id, tokenizer_hash
from trainer.errors import UserError


class TextClassificationDataModule(RecipeDataModule):
    label_column = "labels"
    example_name = "texts"

    def __init__(self, *args: Any, tokenizer_path: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # test and generate reuse the run's tokenizer; fit trains (or loads from cache) its own.
        self.tokenizer_path = tokenizer_path
        self.tokenizer: Tokenizer | None = None

    def _tokenizer_for(self, train: datasets.Dataset) -> Tokenizer:
        if self.tokenizer_path is not None:
            return load_tokenizer(self.tokenizer_path)
        return build_tokenizer(self.cfg.tokenizer, train, self.cfg.text_column, self.cache_dir)

    def _check_columns(self, splits: Splits, columns: list[str]) -> None:
        """The columns exist, and the text column holds text in every split (no numbers, no empty cells)."""
        for column in columns:
            if column not in splits.train.column_names:
                key = "data.text_column" if column == self.cfg.text_column else "data.label_column"
                raise UserError(f"data set has no column {column!r} (it has {splits.train.column_names}); set {key}")
        text = self.cfg.text_column
        for name, split in splits.present():
            feature = split.features.get(text)
            if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
                raise UserError(f"data.text_column {text!r} of the {name} split holds {feature}, not text; set "
                                "data.text_column to a text column")  # fmt: skip
            if split.data.column(text).null_count:
                raise UserError(f"data.text_column {text!r} of the {name} split has empty (null) cells; fill or drop "
                                "them in the data")  # fmt: skip

    def process(self, splits: Splits) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset | None]:
        cfg = self.cfg
        self._check_columns(splits, [cfg.text_column, cfg.label_column])
        self.tokenizer = self._tokenizer_for(splits.train)
        self.labels = labels = label_map(splits, cfg.label_column)
        tokenizer = self.tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(cfg.max_length)
        text_column, label_column = cfg.text_column, cfg.label_column

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encodings = tokenizer.encode_batch(batch[text_column])
            return {"input_ids": [e.ids for e in encodings], "labels": labels.ids(batch[label_column])}

        tag = f"cls-{tokenizer_hash(tokenizer)}-{cfg.max_length}-{labels.tag()}"

        def tokenise(ds: datasets.Dataset | None) -> datasets.Dataset | None:
            if ds is None:
                return None
            out = cached_map(ds, encode, self.cache_dir, tag, remove_columns=ds.column_names)
            return out.with_format("torch")

        return tokenise(splits.train), tokenise(splits.val), tokenise(splits.test)

    def collate_fn(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence of the batch; the mask marks real tokens."""
        lengths = [len(s["input_ids"]) for s in samples]
        input_ids = torch.full((len(samples), max(lengths)), self.pad_id, dtype=torch.long)
        for row, sample in enumerate(samples):
            input_ids[row, : lengths[row]] = sample["input_ids"]
        attention_mask = torch.arange(input_ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask.long()}
        for key in ("labels", "sample_mask"):
            if key in samples[0]:
                batch[key] = torch.stack([s[key] for s in samples])
        return batch

    @property
    def pad_id(self) -> int:
        return pad_token_id(self.tokenizer)

    def facts(self) -> dict[str, Any]:
        self.load()
        return {"vocab_size": self.tokenizer.get_vocab_size(), "num_classes": self.labels.num_classes,
                "pad_id": self.pad_id, "label_names": self.labels.names}  # fmt: skip

    def inference_facts(self) -> dict[str, Any]:
        self.load()
        return {"label_names": self.labels.names}
