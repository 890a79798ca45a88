"""Tokenizers trained with the `tokenizers` library on the training split, cached by what they were trained on."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import datasets
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from trainer.config.schema import TokenizerConfig
from trainer.data.sources import TOKENIZERS
from trainer.errors import UserError
from trainer.model_io import PAD, PADDING_TOKENS, UNK

TOKENIZER_FILE = "tokenizer.json"


def build_tokenizer(cfg: TokenizerConfig, texts: datasets.Dataset, text_column: str, cache_dir: Path) -> Tokenizer:
    """Train on `texts[text_column]`, or load the tokenizer trained earlier on the same data and settings; a
    pretrained one (kind=pretrained) is read from its folder instead."""
    if cfg.kind == "pretrained":
        assert cfg.path is not None  # the schema makes sure
        return pretrained_tokenizer(cfg.path, cfg.local_files_only)
    key = hashlib.sha256(json.dumps([texts._fingerprint, text_column, cfg.model_dump()]).encode()).hexdigest()[:16]
    cached = cache_dir / TOKENIZERS / f"{key}.json"
    if cached.is_file():
        with contextlib.suppress(Exception):  # a cache entry that no longer reads (a crash, bit rot): train again
            return Tokenizer.from_file(str(cached))
    tokenizer, trainer = _untrained(cfg)
    tokenizer.train_from_iterator(_batches(texts, text_column), trainer=trainer, length=len(texts))
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent reader (another rank) never sees half a file.
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    tokenizer.save(str(partial))
    partial.replace(cached)
    return tokenizer


def pretrained_tokenizer(path: str, local_files_only: bool = True) -> Tokenizer:
    """A pretrained model's own tokenizer: its folder's tokenizer.json, or what Transformers makes of the folder's
    other tokenizer files (vocab.txt, merges.txt, ...), or a hub name's where the network allows."""
    folder = Path(path).expanduser()
    if (folder / TOKENIZER_FILE).is_file():
        return load_tokenizer(folder / TOKENIZER_FILE)
    try:
        from transformers import AutoTokenizer

        from trainer.models.pretrained import quiet_transformers

        with quiet_transformers():
            source = str(folder) if folder.is_dir() else path
            tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, local_files_only=local_files_only)
            return tokenizer.backend_tokenizer
    except ImportError:
        raise UserError(f"data.tokenizer.path {path!r} has no {TOKENIZER_FILE}; reading its other tokenizer files "
                        "needs transformers: pip install 'trainer[pretrained]'") from None  # fmt: skip
    except (OSError, ValueError, AttributeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"data.tokenizer.path {path!r}: no tokenizer can be read there ({reason}); give a folder "
                        f"with {TOKENIZER_FILE}") from None  # fmt: skip


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The padding token: the framework's own [PAD] (BERT's too), a pretrained tokenizer's <pad>, else id 0 (its
    rows are masked out anyway)."""
    for token in PADDING_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    return 0


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """Identifies a tokenizer's exact behaviour, for naming the caches of what it produced."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def load_tokenizer(path: Path) -> Tokenizer:
    """A run's own tokenizer (its `tokenizer.json`), which no cache can replace."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises its own untyped Exception
        raise UserError(
            f"the tokenizer {str(path)!r} cannot be read ({str(err).splitlines()[0][:120]}); the run's tokenizer.json "
            "is damaged: restore it from a copy of the run"
        ) from None


def _untrained(cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    specials = [PAD, UNK]  # PAD first: id 0, the padding index of the embeddings.
    steps = [normalizers.Replace("<br />", " ")]  # IMDB keeps raw HTML line breaks
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    if cfg.kind == "char":
        # No merges: a BPE whose vocabulary is the alphabet is a character-level tokenizer.
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.decoder = decoders.Fuse()
        trainer = trainers.BpeTrainer(vocab_size=1, special_tokens=specials, show_progress=False)
        if cfg.lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        return tokenizer, trainer
    if cfg.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.NFD(), normalizers.StripAccents()])
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, special_tokens=specials, show_progress=False)
        return tokenizer, trainer
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tokenizer, trainer


def _batches(texts: datasets.Dataset, column: str, batch_size: int = 1000) -> Iterator[list[str]]:
    for batch in texts.select_columns([column]).iter(batch_size=batch_size):
        yield batch[column]
