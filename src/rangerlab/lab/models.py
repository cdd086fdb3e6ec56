"""The small models the experiments train: a CNN for the digits and a character-level LSTM."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and two linear layers, for 8x8 one-channel images.

    Args:
        width: channels of the first convolution (the second has twice as many).
        classes: number of output classes.
    """

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 16, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a ``(N, 1, 8, 8)`` batch."""
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class CharLSTM(nn.Module):
    """Embedding, a one-layer LSTM and a linear read-out: next-character logits.

    Args:
        vocab: number of characters.
        embed: embedding size.
        hidden: LSTM hidden size.
    """

    def __init__(self, vocab: int, embed: int = 32, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, idx: Tensor) -> Tensor:
        """Logits ``(N, T, vocab)`` for an index batch ``(N, T)``."""
        out, _ = self.lstm(self.embed(idx))
        return self.head(out)


class DeepCNN(nn.Module):
    """Eight weight layers for 8x8 digits (six 3x3 convolutions in three blocks with 2x2
    max-pools, two linear layers), no normalisation: the depth You et al.'s layer table needs.

    Args:
        width: channels of the first block (doubled in each following block).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        c = [1, width, width, 2 * width, 2 * width, 4 * width, 4 * width]
        self.convs = nn.ModuleList(nn.Conv2d(c[i], c[i + 1], 3, padding=1) for i in range(6))
        self.fc1 = nn.Linear(4 * width * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a ``(N, 1, 8, 8)`` batch."""
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if i in (1, 3):
                x = torch.max_pool2d(x, 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))
