"""A convolutional image classifier: stages of (conv-BN-ReLU) x k, each stage followed by 2x2 pooling."""

from __future__ import annotations

import torch
from torch import nn


class CNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: list[int],
        convs_per_stage: int = 2,
        batch_norm: bool = True,
        dropout: float = 0.1,
        hidden_dim: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out_channels in channels:
            for _ in range(convs_per_stage):
                # No conv bias under batch norm: BN's shift makes it redundant.
                layers.append(nn.Conv2d(width, out_channels, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(nn.ReLU(inplace=True))
                width = out_channels
            # ceil_mode keeps odd sizes (8x8 digits -> 4 -> 2 -> 1) from collapsing to zero.
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> logits (B, num_classes)."""
        if self.features[0].weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)  # a model moved to NHWC takes NHWC in
        return self.head(self.features(images))
