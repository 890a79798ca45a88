"""What the benchmarks train beyond the shipped families: a user's own `nn.Module` (a small ResNet, named by
class path as a user names theirs) and a pretrained BERT-style folder built here, since no hub can be reached.

    python benchmarks/own_models.py FOLDER     # writes FOLDER/bert (config.json, weights, tokenizer.json)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class SmallResNet(nn.Module):
    """A user's own image classifier: it takes the data's facts it needs by name."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())  # fmt: skip
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(images)).mean(dim=(2, 3)))


def custom_recipe(folder: Path, data: Path) -> Path:
    """mnist with SmallResNet: the recipe a user would write for their own model."""
    recipe = folder / "custom_resnet.yaml"
    recipe.write_text(
        "# trainer fit custom_resnet.yaml\ntask: image_classification\n"
        f"model: {{family: custom, class_path: own_models:SmallResNet, import_path: {HERE}, "
        "init_args: {width: 32}}\n"
        f"data: {{path: {data}, global_batch_size: 64}}\noptim: {{lr: 0.001}}\ntrainer: {{max_epochs: 1}}\n"
    )
    return recipe


def bert_folder(folder: Path, texts: list[str], layers: int = 4, width: int = 256, vocab_size: int = 8000) -> Path:
    """A BERT-style encoder (BERT-mini's shape by default) with a WordPiece tokenizer trained on `texts`, saved as a
    hub folder is: random weights, since what is measured is the cost of a step, not what it learns."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                   show_progress=False))  # fmt: skip
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", cls), ("[SEP]", sep)])  # fmt: skip
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
                        max_position_embeddings=512, pad_token_id=0)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return folder


def imdb_texts(data: Path, count: int = 5000) -> list[str]:
    import datasets

    return datasets.load_dataset(str(data / "imdb"), split="train").shuffle(seed=0).select(range(count))["text"]


def bert_recipe(folder: Path, data: Path) -> Path:
    """IMDB with the BERT-style folder of `bert_folder`: the recipe a user would write to fine-tune one."""
    bert = folder / "bert"
    if not (bert / "config.json").is_file():
        bert_folder(bert, imdb_texts(data))
    recipe = folder / "pretrained_bert.yaml"
    recipe.write_text(
        "# trainer fit pretrained_bert.yaml\ntask: text_classification\n"
        f"model: {{family: huggingface, pretrained: {bert}}}\n"
        f"data: {{path: {data / 'imdb'}, max_length: 128, global_batch_size: 32}}\n"
        "optim: {lr: 2.0e-5}\ntrainer: {max_epochs: 1}\n"
    )
    return recipe


if __name__ == "__main__":
    import os

    shared = Path(os.environ.get("TRAINER_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
    print(bert_folder(Path(sys.argv[1]) / "bert", imdb_texts(shared)))
