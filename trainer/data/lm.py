"""Causal language-modelling data: text tokenised once (cached) and packed into fixed-length blocks."""

from __future__ import annotations

from typing import Any

import datasets

from trainer.data.base import cached_map
from trainer.data.sources import Splits, hold_out
from trainer.data.text import TextClassificationDataModule
from trainer.data.tokenizer import tokenizer_hash
from trainer.errors import UserError


class LanguageModelingDataModule(TextClassificationDataModule):
    """Shares tokenizer handling with text classification; packs instead of padding."""

    # Without a validation split, hold out packed blocks rather than raw lines, so both sets are
    # contiguous text.
    carve_validation = False
    collate_fn = None  # fixed-length blocks stack with the default collate
    label_column = None
    example_name = "blocks of data.block_size + 1 tokens"

    def too_small_hint(self) -> str:
        return f"the text is shorter than that: lower data.block_size (now {self.cfg.block_size}) or give more text"

    def process(self, splits: Splits) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset | None]:
        cfg = self.cfg
        self._check_columns(splits, [cfg.text_column])
        self.tokenizer = tokenizer = self._tokenizer_for(splits.train)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        # Each block holds block_size inputs plus the one next token the last input predicts.
        span = cfg.block_size + 1
        text_column = cfg.text_column

        def pack(batch: dict[str, list]) -> dict[str, list]:
            ids = [token for e in tokenizer.encode_batch(batch[text_column]) for token in e.ids]
            usable = len(ids) - len(ids) % span
            return {"input_ids": [ids[i : i + span] for i in range(0, usable, span)]}

        tag = f"lm-{tokenizer_hash(tokenizer)}-{span}"

        def blocks(ds: datasets.Dataset | None) -> datasets.Dataset | None:
            if ds is None:
                return None
            return cached_map(ds, pack, self.cache_dir, tag, remove_columns=ds.column_names)

        train, val, test = blocks(splits.train), blocks(splits.val), blocks(splits.test)
        if val is None:
            if len(train) < 2:  # one block to train on and one to validate with, at least
                raise UserError(
                    f"the training text makes {len(train)} block(s) of data.block_size + 1 tokens; lower "
                    f"data.block_size (now {cfg.block_size}) or give more text"
                )
            train, val = hold_out(train, cfg.val_fraction or 0.1, self.seed)
            if cfg.max_eval_samples is not None and cfg.max_eval_samples < len(val):
                val = val.shuffle(seed=self.seed).select(range(cfg.max_eval_samples))
        return tuple(ds.with_format("torch") if ds is not None else None for ds in (train, val, test))

    def facts(self) -> dict[str, Any]:
        self.load()
        return {"vocab_size": self.tokenizer.get_vocab_size()}

    def inference_facts(self) -> dict[str, Any]:
        return {}
