"""LSTM models on cuDNN's `nn.LSTM`: a sequence classifier over packed padding, and a language model."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


def run_lstm(lstm: nn.LSTM, inputs: torch.Tensor | PackedSequence) -> tuple[torch.Tensor | PackedSequence, tuple]:
    """`lstm(inputs)`, in float32 under CPU autocast: there autocast sends the LSTM to oneDNN in bf16, which
    CPUs without bf16 instructions cannot build ("could not create a primitive descriptor for the LSTM
    forward propagation primitive", torch 2.13). On a GPU cuDNN runs it in bf16 as usual."""
    if torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return lstm(inputs)
    return lstm(inputs)


class LSTMClassifier(nn.Module):
    """Embeds tokens, runs an LSTM over the real (unpadded) length of each sequence, and classifies
    either its final state (`pooling="last"`) or its outputs pooled over the real tokens (`"mean"`, `"max"`).

    Pooling gives every position a direct gradient path, which trains much faster on long reviews.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        pooling: str = "last",
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if pooling not in ("last", "mean", "max"):
            raise ValueError(f"pooling must be last, mean or max, not {pooling!r}")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * directions, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> logits (B, num_classes)."""
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.embedding(input_ids), lengths, batch_first=True, enforce_sorted=False)
        outputs, (hidden, _) = run_lstm(self.lstm, packed)
        if self.pooling == "last":
            # hidden: (layers * directions, B, H); the top layer's final state in each direction.
            top = hidden[-2:] if self.lstm.bidirectional else hidden[-1:]
            features = torch.cat(list(top), dim=-1)
        else:
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=input_ids.shape[1])
            real = attention_mask.bool().unsqueeze(-1)
            if self.pooling == "max":
                features = outputs.masked_fill(~real, float("-inf")).amax(dim=1)
            else:
                features = (outputs * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        return self.head(self.dropout(features))


class LSTMLanguageModel(nn.Module):
    """Next-token prediction with an LSTM; input embedding and output head share weights when sizes allow."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0
        )
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_size, embed_dim) if hidden_size != embed_dim else nn.Identity()
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab_size)."""
        hidden, _ = run_lstm(self.lstm, self.dropout(self.embedding(input_ids)))
        return self.head(self.proj(self.dropout(hidden)))
