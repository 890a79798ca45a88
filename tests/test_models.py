"""The plain models: shapes, causality, padding invariance, weight tying, sampling."""

from __future__ import annotations

import torch

from trainer.models import CNN, GPT, LSTMClassifier, LSTMLanguageModel, TransformerClassifier
from trainer.models.generate import sample


def test_cnn_handles_small_odd_and_colour_images() -> None:
    model = CNN(in_channels=3, num_classes=10, channels=[8, 16, 16]).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    grey = CNN(in_channels=1, num_classes=10, channels=[8, 16, 16]).eval()
    assert grey(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_gpt_is_causal_and_ties_weights() -> None:
    torch.manual_seed(0)
    model = GPT(vocab_size=20, max_len=16, d_model=32, n_heads=4, n_layers=2).eval()
    assert model.head.weight is model.token_embedding.weight
    tokens = torch.randint(0, 20, (1, 12))
    changed = tokens.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 20
    # Changing tokens 8.. must not change the predictions at positions 0..7.
    torch.testing.assert_close(model(tokens)[:, :8], model(changed)[:, :8])
    assert not torch.allclose(model(tokens)[:, 8:], model(changed)[:, 8:])


def test_lstm_lm_is_causal() -> None:
    torch.manual_seed(0)
    model = LSTMLanguageModel(vocab_size=20, embed_dim=16, hidden_size=24).eval()
    tokens = torch.randint(0, 20, (2, 10))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 3) % 20
    torch.testing.assert_close(model(tokens)[:, :6], model(changed)[:, :6])


def _padding_invariant(model: torch.nn.Module) -> None:
    tokens = torch.randint(1, 30, (1, 7))
    padded = torch.cat([tokens, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.ones(1, 7, dtype=torch.long)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(tokens, mask), model(padded, padded_mask), atol=1e-5, rtol=1e-5)


def test_classifiers_ignore_padding() -> None:
    torch.manual_seed(0)
    _padding_invariant(TransformerClassifier(vocab_size=30, num_classes=2, max_len=16, d_model=32).eval())
    for pooling in ("last", "mean", "max"):
        lstm = LSTMClassifier(
            vocab_size=30, num_classes=2, embed_dim=8, hidden_size=8, bidirectional=True, pooling=pooling
        )
        _padding_invariant(lstm.eval())


def test_sample_extends_the_prompt_within_the_context() -> None:
    torch.manual_seed(0)
    model = GPT(vocab_size=11, max_len=8, d_model=16, n_heads=2, n_layers=1).eval()
    prompt = torch.tensor([[1, 2, 3]])
    out = sample(model, prompt, max_new_tokens=20, context_len=8, top_k=3, suppress_ids=[0, 1])
    assert out.shape == (1, 23)
    assert int(out[:, 3:].min()) >= 2
    assert torch.equal(out[:, :3], prompt)
    assert int(out.max()) < 11
