"""DSQN: deep spiking Q-network trained end to end (Chen, Peng, Huang, Tian 2022).

Synaptic layers (the Nature CNN for Atari, the MinAtar CNN, or an MLP) each feed a layer of LIF
neurons, except the last, which feeds non-spiking leaky integrators whose membrane voltage,
decoded over the T steps (`max` by default, as in the paper), is the Q-value. The observation
is presented at every step ("direct" encoding); since it is static, the first synaptic layer
runs once. The rest runs layer by layer: each synaptic layer processes all T x B inputs in one
call, and only the neurons' elementwise dynamics loop over T.

The `liu2022` preset follows Liu et al. 2022 (IEEE TCYB): T = 64 and Q = Linear(mean spike
rate of the last hidden layer) instead of a membrane readout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from compare.core.config import check_widths
from compare.core.dqn import DQNLearner
from compare.core.errors import UsageError
from compare.core.methods import TrainedMethod
from compare.core.networks import pixel_divisor, synapse_stack
from compare.core.spiking import SpikingStack
from direct import neurons
from direct.neurons import LeakyIntegratorLayer, LIFLayer, NeuronOptions, scale_weights

Decoder = Literal["max", "mean", "last", "max-abs"]


@dataclass(frozen=True)
class DSQNOptions(NeuronOptions):
    timesteps: int = 8                 # T (the paper's training script; its model default is 5)
    decoder: Decoder = "max"           # Q from the output membrane over T
    readout: Literal["membrane", "rate"] = "membrane"  # rate: Linear on mean spike rate (Liu 2022)
    out_tau_mem: float = 2.0           # output leaky integrator
    bias: bool = False                 # the paper omits biases
    mlp_hidden: tuple[int, ...] = (256, 256)  # hidden widths for vector observations
    input_divisor: float = 256.0       # Atari pixels enter as frame / input_divisor

    def __post_init__(self):
        super().__post_init__()
        if self.timesteps <= 0:
            raise UsageError(f"timesteps={self.timesteps} must be a positive integer")
        if self.input_divisor <= 0:
            raise UsageError(f"input_divisor={self.input_divisor} must be positive")
        neurons.check_time_constant("out_tau_mem", self.out_tau_mem)
        check_widths(self, "mlp_hidden")


def decode(v: torch.Tensor, decoder: str) -> torch.Tensor:
    """(T, B, A) output membrane -> (B, A) Q-values."""
    if decoder == "max":
        return v.max(dim=0).values
    if decoder == "mean":
        return v.mean(dim=0)
    if decoder == "last":
        return v[-1]
    # max-abs: the value (with its sign) that is largest in magnitude over T
    idx = v.abs().argmax(dim=0, keepdim=True)
    return v.gather(0, idx).squeeze(0)


class SpikingQNetwork(SpikingStack):
    """The family's synapse stack with LIF neurons (`compare.core.spiking.SpikingStack`); Q
    decoded from the output membrane, or (`readout="rate"`) the last layer on spike rates."""

    def __init__(self, synapses: list[nn.Module], options: DSQNOptions, input_divisor: float | None):
        membrane = options.readout == "membrane"
        super().__init__(synapses, lambda: LIFLayer(options.lif), options.timesteps, input_divisor,
                         last="integrator" if membrane else "rate",
                         integrator=LeakyIntegratorLayer(options.out_tau_mem, options.neuron_impl) if membrane else None)
        self.opts = options

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.run(obs)
        return out if self.output is None else decode(out, self.opts.decoder)

    def forward_stepwise(self, obs: torch.Tensor) -> torch.Tensor:
        """The same network simulated one time step at a time through every layer, as a
        neuromorphic chip runs it; agrees exactly with `forward`."""
        first = self.first_current(obs)
        v_lif = [None] * len(self.lifs)
        v_out = None
        outputs, rates = [], 0.0
        for _ in range(self.timesteps):
            z, v_lif[0] = self.lifs[0].step(first, v_lif[0])
            for i in range(1, len(self.lifs)):
                current = self.synapses[i](z.flatten(1) if isinstance(self.synapses[i], nn.Linear) else z)
                z, v_lif[i] = self.lifs[i].step(current, v_lif[i])
            if self.output is None:
                rates = rates + z.flatten(1)
            else:
                v_out = self.output.step(self.synapses[-1](z.flatten(1)), v_out)
                outputs.append(v_out)
        if self.output is None:
            return self.synapses[-1](rates / self.timesteps)
        return decode(torch.stack(outputs), self.opts.decoder)


def build_dsqn(options: DSQNOptions, family: str, obs_shape: tuple[int, ...], n_actions: int) -> SpikingQNetwork:
    """The family's synapse stack (the ANN DQN's own layers) with LIF neurons."""
    synapses = synapse_stack(family, obs_shape, n_actions, options.mlp_hidden, bias=options.bias)
    return SpikingQNetwork(scale_weights(synapses, options.weight_gain), options,
                           pixel_divisor(family, options.input_divisor))


DSQN = TrainedMethod(
    "dsqn", "deep spiking Q-network, surrogate gradients in Norse (Chen et al. 2022)", DSQNOptions, DQNLearner,
    build_dsqn, exports={"nir": "direct.nir_export:export_dsqn_nir"},
    option_presets={
        "liu2022": DSQNOptions(timesteps=64, readout="rate", input_divisor=255.0),
        # Vector-observation tasks: with the Atari defaults (ATan alpha 2, no biases) CartPole
        # learned on some seeds only; biases and Norse's SuperSpike (alpha 100) learn it.
        "cartpole": DSQNOptions(bias=True, surrogate="super", surrogate_alpha=100.0),
        # MinAtar's sparse binary frames leave both LIF layers silent with PyTorch's init (0%
        # firing on Breakout frames; the Q-values are all 0); x8 gives 11% and 16%. Under the
        # default init=data the LIF layers are rescaled anyway and the gain acts on the output layer.
        "minatar": DSQNOptions(weight_gain=8.0),
    },
)
