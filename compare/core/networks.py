"""One synapse stack per environment family, one input scaling, and the ANN built on them.

`synapse_stack` is the single place the topologies are written: the ANN DQN, the DSQN and the
hybrid's spiking actor all take their synaptic layers from it, so at equal widths a comparison
between them is one of neurons, not of layer shapes (`tests/test_architecture.py` checks it).
The widths for vector observations are each method's own option (`mlp_hidden`): the defaults
are 256-256 for dqn (rl-baselines3-zoo's CartPole DQN), dsqn (the same) and the hybrid's actor
(PopSAN), and 64-64 for ppo's actor (CleanRL's ppo.py); a comparison at equal widths sets them
with `--set mlp_hidden=...`.
`scale_input` is the single place observations are scaled.

Every network takes the raw observation tensor as the environment gives it (uint8 frames for
Atari and MinAtar, float32 vectors for classic control) and scales it itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compare.core.errors import UsageError
from compare.core.linear import Linear

PIXEL_RANGE = 255.0  # Atari frames are uint8; ANNs divide by this (DSQN's paper by 256)
ARCHS = ("default", "speck")


def pixel_divisor(family: str, divisor: float = PIXEL_RANGE) -> float | None:
    """What a network divides observations by: Atari pixels by `divisor` (the ANN's 255 puts
    them in [0, 1]; a spiking method may take its paper's, e.g. the DSQN's 256); MinAtar
    (binary) and vector observations as they are."""
    return divisor if family == "atari" else None


def scale_input(obs: torch.Tensor, divisor: float | None) -> torch.Tensor:
    x = obs.float()
    return x / divisor if divisor else x


def synapse_stack(family: str, obs_shape: tuple[int, ...], n_outputs: int,
                  mlp_hidden: tuple[int, ...] = (256, 256), bias: bool = True,
                  arch: str = "default") -> list[nn.Module]:
    """The family's synaptic layers (Conv2d / Linear), input to output, without neurons.

    - atari: the Nature CNN (Mnih et al. 2015) over 4 stacked 84x84 frames, or with
      `arch="speck"` a network that maps onto one Speck / DYNAP-CNN chip (docs/hardware.md, "Chip and library facts");
    - minatar: Young & Tian 2019, one 3x3 convolution with 16 channels and 128 hidden units;
    - classic: an MLP over the flattened observation with `mlp_hidden` widths.
    """
    if arch not in ARCHS:
        raise UsageError(f"arch={arch!r} is not allowed; choose one of: {', '.join(ARCHS)}")
    if arch == "speck":
        if family != "atari" or tuple(obs_shape[-2:]) != (84, 84):
            raise UsageError(f"arch=speck is an Atari network for 84x84 frames; this environment gives "
                             f"{family} observations of shape {tuple(obs_shape)} (use arch=default)")
        return speck_stack(obs_shape[0], n_outputs)
    if family == "atari":
        return [nn.Conv2d(obs_shape[0], 32, 8, stride=4, bias=bias),
                nn.Conv2d(32, 64, 4, stride=2, bias=bias),
                nn.Conv2d(64, 64, 3, stride=1, bias=bias),
                Linear(64 * 7 * 7, 512, bias=bias),
                Linear(512, n_outputs, bias=bias)]
    if family == "minatar":
        size = obs_shape[-1]
        return [nn.Conv2d(obs_shape[0], 16, 3, stride=1, bias=bias),
                Linear(16 * (size - 2) ** 2, 128, bias=bias),
                Linear(128, n_outputs, bias=bias)]
    widths = [math.prod(obs_shape), *mlp_hidden, n_outputs]
    return [Linear(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])]


def speck_stack(in_channels: int, n_outputs: int) -> list[nn.Module]:
    """A Q-network that maps onto one Speck / DYNAP-CNN chip (docs/hardware.md, "Chip and library facts").

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
    return [nn.Conv2d(in_channels, 16, 8, stride=4, bias=False),
            nn.Conv2d(16, 32, 4, stride=2, bias=False),
            nn.Conv2d(32, 32, 3, stride=2, bias=False),
            Linear(512, 128, bias=False),
            Linear(128, n_outputs, bias=False)]


class ANN(nn.Module):
    """A synapse stack with a ReLU after every layer but the last (and a Flatten between
    convolutions and linear layers), on scaled input. `net` is the plain layer sequence that
    conversion normalizes; `input_divisor` is what `forward` scales by."""

    def __init__(self, synapses: list[nn.Module], input_divisor: float | None):
        super().__init__()
        self.input_divisor = input_divisor
        layers: list[nn.Module] = []
        for i, layer in enumerate(synapses):
            if isinstance(layer, nn.Linear) and i > 0 and isinstance(synapses[i - 1], nn.Conv2d):
                layers.append(nn.Flatten())
            layers.append(layer)
            if i < len(synapses) - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(scale_input(obs, self.input_divisor))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (what `forward`'s output layer reads)."""
        return self.net[:-1](scale_input(obs, self.input_divisor))

    @property
    def output_layer(self) -> nn.Linear:
        return self.net[-1]


def build_ann(family: str, obs_shape: tuple[int, ...], n_outputs: int,
              mlp_hidden: tuple[int, ...] = (256, 256), arch: str = "default") -> ANN:
    """The family's ANN: Nature CNN, Speck CNN, MinAtar CNN or MLP, with `n_outputs` outputs."""
    return ANN(synapse_stack(family, obs_shape, n_outputs, mlp_hidden, arch=arch), pixel_divisor(family))
