"""ANN Q-networks: observation batch in, one Q-value per action out.

Every Q-network the learner trains (these, and the spiking ones in `direct/`) takes the raw
observation tensor as the environment gives it (uint8 frames for Atari and MinAtar, float32
vectors for classic control) and does its own input scaling.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class NatureCNN(nn.Module):
    """Mnih et al. 2015: three convolutions and a 512-unit layer over 4 stacked 84x84 frames."""

    def __init__(self, n_actions: int, in_channels: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, n_actions),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float() / 255.0)


class MinAtarCNN(nn.Module):
    """Young & Tian 2019: one 3x3 convolution with 16 channels, then 128 hidden units."""

    def __init__(self, n_actions: int, in_channels: int, size: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * (size - 2) ** 2, 128), nn.ReLU(),
            nn.Linear(128, n_actions),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


class MLP(nn.Module):
    def __init__(self, n_inputs: int, n_actions: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


def build_ann_q_network(family: str, obs_shape: tuple[int, ...], n_actions: int,
                        mlp_hidden: tuple[int, ...] = (256, 256)) -> nn.Module:
    if family == "atari":
        return NatureCNN(n_actions, in_channels=obs_shape[0])
    if family == "minatar":
        return MinAtarCNN(n_actions, in_channels=obs_shape[0], size=obs_shape[-1])
    return MLP(math.prod(obs_shape), n_actions, mlp_hidden)
