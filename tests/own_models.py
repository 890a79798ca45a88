"""A user's project for the custom-model tests: their `models.py` beside their recipe."""

from __future__ import annotations

from pathlib import Path

MODELS = '''
import torch
from torch import nn


class TinyCNN(nn.Module):
    """Sized by the image: proves in_channels, image_size and num_classes are passed."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.head = nn.Linear(width * image_size[0] * image_size[1], num_classes)

    def forward(self, x):  # any argument names: the graph exports name their inputs themselves
        return self.head(torch.relu(self.conv(x)).flatten(1))


class MeanEmbedding(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.head = nn.Linear(width, num_classes)

    def forward(self, ids, padding):
        mask = padding.unsqueeze(-1).float()
        return self.head((self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1))


class Bigram(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, width: int = 16) -> None:
        super().__init__()
        self.block_size = block_size
        self.embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


class OneTooMany(TinyCNN):
    def forward(self, images):
        return torch.cat([super().forward(images), images[:, :1, 0, 0]], dim=1)


class Broken(TinyCNN):
    def forward(self, images):
        raise RuntimeError("this forward is broken")


class TupleWhenTraining(TinyCNN):
    """Like Inception's auxiliary outputs: right in eval mode, a tuple in training mode."""

    def forward(self, x):
        logits = super().forward(x)
        return (logits, logits) if self.training else logits


class Detached(TinyCNN):
    def forward(self, x):
        return super().forward(x).detach()


class Exits(TinyCNN):
    def __init__(self, *args, **kwargs):
        raise SystemExit(0)


class Builder:
    """Not an nn.Module."""
'''
IMAGE = "task: image_classification\ndata: {name: sklearn:digits, global_batch_size: 32}\n"
TASKS = {
    "image": ("models:TinyCNN", IMAGE),
    "text": ("models.MeanEmbedding", "task: text_classification\ndata: {path: IMDB, max_length: 48, "
             "global_batch_size: 32, tokenizer: {kind: bpe, vocab_size: 400}}\n"),
    "lm": ("models:Bigram", "task: language_modeling\ndata: {path: SHAKESPEARE, block_size: 32, "
           "global_batch_size: 16, tokenizer: {kind: char, lowercase: false}}\n"
           "generate: {prompt: 'ROMEO:', max_new_tokens: 8}\n"),
}  # fmt: skip


def project(folder: Path, class_path: str, data: str, init_args: str = "{}", steps: int = 6) -> Path:
    """A user's project: their module beside their recipe."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.py").write_text(MODELS)
    recipe = folder / "own.yaml"
    recipe.write_text(f"# trainer fit own.yaml\nmodel: {{family: custom, class_path: '{class_path}', init_args: "
                      f"{init_args}}}\n{data}optim: {{lr: 0.01}}\ntrainer: {{max_steps: {steps}}}\n")  # fmt: skip
    return recipe
