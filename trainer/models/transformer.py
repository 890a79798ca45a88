"""Pre-norm Transformers on `F.scaled_dot_product_attention`: an encoder classifier and a decoder-only LM."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        # (B, T, C) -> (B, heads, T, C / heads)
        q, k, v = (t.view(batch, seq, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        return self.out(y.transpose(1, 2).reshape(batch, seq, width))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), attn_mask, is_causal))
        return x + self.mlp(self.norm2(x))


class _TransformerBase(nn.Module):
    def __init__(
        self, vocab_size: int, max_len: int, d_model: int, n_heads: int, n_layers: int, d_ff: int | None, dropout: float
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff or 4 * d_model, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def _init_weights(self, n_layers: int) -> None:
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers).
        for name, param in self.named_parameters():
            if param.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("attn.out.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(param, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(param)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.dropout(self.token_embedding(input_ids) + self.position_embedding(positions))


class TransformerClassifier(_TransformerBase):
    """Encoder over a padded batch (padding masked out of attention), mean-pooled over real tokens."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(vocab_size, max_len, d_model, n_heads, n_layers, d_ff, dropout)
        self.head = nn.Linear(d_model, num_classes)
        self._init_weights(n_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> logits (B, num_classes)."""
        keep = attention_mask.bool()
        # (B, 1, 1, T) boolean mask: every query may attend to the real tokens only.
        attn_mask = keep[:, None, None, :]
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        x = self.norm(x)
        weights = keep.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


class GPT(_TransformerBase):
    """Decoder-only causal language model with weight tying, after nanoGPT."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int | None = None,
        dropout: float = 0.1,
        tie_weights: bool = True,
    ) -> None:
        super().__init__(vocab_size, max_len, d_model, n_heads, n_layers, d_ff, dropout)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self._init_weights(n_layers)
        if tie_weights:
            self.head.weight = self.token_embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T <= max_len) -> logits (B, T, vocab_size)."""
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.head(self.norm(x))
