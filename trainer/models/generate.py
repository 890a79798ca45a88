"""Autoregressive sampling from any causal LM that maps input_ids (B, T) to logits (B, T, V)."""

from __future__ import annotations

import torch
from torch import nn

MIN_TEMPERATURE = 1e-6  # below it, float32 logits divided by the temperature would overflow into nan


@torch.no_grad()
def sample(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    context_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    suppress_ids: list[int] | None = None,
) -> torch.Tensor:
    """Extend input_ids (B, T) by max_new_tokens sampled tokens; the model sees at most context_len tokens.

    `temperature=0` takes the most likely token (greedy). `suppress_ids` are never sampled (padding and
    unknown-token ids carry no text).
    """
    for _ in range(max_new_tokens):
        context = input_ids[:, -context_len:]
        logits = model(context)[:, -1, :].float()
        if suppress_ids:
            logits[:, suppress_ids] = float("-inf")
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1, None]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            # The best logit first brought to 0, and a floor under the temperature: a tiny one then sends the
            # rest to -inf (as greedy as it gets), never to nan.
            scaled = (logits - logits.max(dim=-1, keepdim=True).values) / max(temperature, MIN_TEMPERATURE)
            next_id = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
        input_ids = torch.cat([input_ids, next_id], dim=1)
    return input_ids
