"""ANN Q-networks: observation batch in, one Q-value per action out.

Every Q-network the learner trains (these, and the spiking ones in `direct/`) takes the raw
observation tensor as the environment gives it (uint8 frames for Atari and MinAtar, float32
vectors for classic control) and does its own input scaling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compare.errors import UsageError


class NatureCNN(nn.Module):
    """Mnih et al. 2015: three convolutions and a 512-unit layer over 4 stacked 84x84 frames."""

    input_divisor = 255.0  # what forward divides the uint8 frames by (conversion reads it)

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


class SpeckCNN(nn.Module):
    """A Q-network that maps onto one Speck / DYNAP-CNN chip (REFERENCE.md section 6).

    No biases; square kernels <= 16; <= 1024 channels; each layer fits one core. Memory per
    layer on the chip (kernel = c_in 2^(ceil log2 k^2 + ceil log2 c_out), neuron = c_out
    2^(ceil log2 H + ceil log2 W)), for 4 x 84 x 84 input:

        layer                     output      kernel mem  neuron mem
        Conv(4->16, k8, s4)       16x20x20    4 Ki        16 Ki
        Conv(16->32, k4, s2)      32x9x9      8 Ki        8 Ki
        Conv(32->32, k3, s2)      32x4x4      16 Ki       0.5 Ki
        Linear(512->128)          128         64 Ki       0.125 Ki  (a conv with a 4x4 kernel)
        Linear(128->A)            A           128 * 2^ceil(log2 A)   (2 Ki for A = 16)

    about 88k parameters (Nature CNN: 1.7M).
    """

    input_divisor = 255.0

    def __init__(self, n_actions: int, in_channels: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 8, stride=4, bias=False), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, bias=False), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, bias=False), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(512, 128, bias=False), nn.ReLU(),
            nn.Linear(128, n_actions, bias=False),
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


ARCHS = ("default", "speck")


def build_ann_q_network(family: str, obs_shape: tuple[int, ...], n_actions: int,
                        mlp_hidden: tuple[int, ...] = (256, 256), arch: str = "default") -> nn.Module:
    """`arch`: "default" (the family's standard network) or "speck" (Atari only)."""
    if arch == "speck":
        if family != "atari" or tuple(obs_shape[-2:]) != (84, 84):
            raise UsageError(f"arch=speck is an Atari network for 84x84 frames; this environment gives "
                             f"{family} observations of shape {tuple(obs_shape)} (use arch=default)")
        return SpeckCNN(n_actions, in_channels=obs_shape[0])
    if family == "atari":
        return NatureCNN(n_actions, in_channels=obs_shape[0])
    if family == "minatar":
        return MinAtarCNN(n_actions, in_channels=obs_shape[0], size=obs_shape[-1])
    return MLP(math.prod(obs_shape), n_actions, mlp_hidden)
