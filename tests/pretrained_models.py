"""Tiny Hugging Face models for tests: built from a config with random weights and saved with `save_pretrained`,
each with a `tokenizer.json` made by the `tokenizers` library, as a hub folder has them. No hub, no network."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_bert(folder: Path, words: list[str], layers: int = 2, width: int = 32) -> Path:
    """A BERT encoder whose WordPiece vocabulary is the special tokens, the letters and `words`."""
    from transformers import BertConfig, BertModel

    vocab = {token: index for index, token in enumerate(dict.fromkeys([*SPECIAL, *"abcdefghijklmnopqrstuvwxyz",
                                                                          *(w.lower() for w in words)]))}  # fmt: skip
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.decoder = decoders.WordPiece()
    config = BertConfig(vocab_size=len(vocab), hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * width, max_position_embeddings=128, pad_token_id=0)  # fmt: skip
    return _save(folder, BertModel(config), tokenizer, {"tokenizer_class": "BertTokenizer", "do_lower_case": True})


def tiny_gpt2(folder: Path, text: str, layers: int = 2, width: int = 32) -> Path:
    """A GPT-2 causal LM with a character-level tokenizer over the characters of `text`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = {token: index for index, token in enumerate(["<unk>", *sorted(set(text))])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer.decoder = decoders.Fuse()
    config = GPT2Config(
        vocab_size=len(vocab), n_embd=width, n_layer=layers, n_head=2, n_positions=128, bos_token_id=0, eos_token_id=0
    )
    return _save(folder, GPT2LMHeadModel(config), tokenizer, {"tokenizer_class": "PreTrainedTokenizerFast"})


def _save(folder: Path, model, tokenizer: Tokenizer, tokenizer_config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder
