"""Hybrid actor-critic: a spiking actor, trained with surrogate gradients, and an ANN critic used
only in training (the PopSAN line: Tang et al., CoRL 2020), adapted to discrete actions.

Design choices (PopSAN was shown on continuous control only):
- Vector observations enter through PopSAN's population encoder: each dimension drives
  `pop_size` neurons with learnable Gaussian receptive fields, and a deterministic IF neuron
  per field turns the stimulation into spikes (v <- v + A; spike when v > 0.999, then
  subtract), with the straight-through pseudo-gradient of PopSAN's encoder.
- Pixel observations enter as in the DSQN: frame / input_divisor drives the first convolution
  at every step (computed once), followed by the Nature CNN's layers, each feeding LIF neurons.
- Hidden neurons are the DSQN's current-free LIF (Norse's lif_box equation; every neuron
  parameter and surrogate selectable), not PopSAN's current-based LIF.
- Output: one population of `out_pop` neurons per action. `decoder=rate`: spiking neurons,
  population firing rates over T; `membrane`: non-spiking leaky integrators, mean membrane over
  T (the ILC-SAN idea). A learnable per-action linear decoder (PopSAN's) turns each action's
  population into one logit. The decoder's A x out_pop multiplies are not in the cost count.
- The actor and the ANN critic (`compare.core.ppo.PPOLearner.networks`) share nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from compare.core.config import check_widths
from compare.core.errors import UsageError
from compare.core.methods import TrainedMethod
from compare.core.networks import pixel_divisor, synapse_stack
from compare.core.ppo import PPOLearner
from compare.core.spiking import IAF_OPS, SpikingStack
from direct import neurons
from direct.neurons import LeakyIntegratorLayer, LIFLayer, NeuronOptions, scale_weights

ENCODER_THRESHOLD = 0.999  # PopSAN's regular-spike encoder


@dataclass(frozen=True)
class HybridOptions(NeuronOptions):
    v_th: float = 0.5                       # PopSAN's threshold
    weight_gain: float = 4.0                # x PyTorch's default synapse init (see below)
    timesteps: int = 5                      # T (PopSAN)
    pop_size: int = 10                      # encoder neurons per observation dimension (PopSAN)
    encoder_mean_min: float = -3.0          # receptive-field centres start evenly over [min, max]
    encoder_mean_max: float = 3.0
    encoder_std: float = math.sqrt(0.15)    # initial receptive-field width (PopSAN)
    mlp_hidden: tuple[int, ...] = (256, 256)  # spiking hidden layers for vector observations (PopSAN)
    out_pop: int = 10                       # output neurons per action (PopSAN)
    decoder: Literal["rate", "membrane"] = "rate"
    out_tau_mem: float = 2.0                # membrane decoder's leaky integrators
    bias: bool = True
    input_divisor: float = 255.0            # Atari pixels enter as frame / input_divisor
    critic_hidden: tuple[int, ...] = (64, 64)  # ANN critic widths for vector observations

    def __post_init__(self):
        super().__post_init__()
        for name in ("timesteps", "pop_size", "out_pop"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be a positive integer")
        neurons.check_time_constant("out_tau_mem", self.out_tau_mem)
        for name in ("encoder_std", "input_divisor"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be positive")
        if self.encoder_mean_max <= self.encoder_mean_min:
            raise UsageError("encoder_mean_max must exceed encoder_mean_min")
        check_widths(self, "mlp_hidden", "critic_hidden")


class PopulationEncoder(nn.Module):
    """(B, n) observations -> (T, B, n * pop_size) deterministic spikes."""

    update_ops = IAF_OPS  # its neurons integrate a constant stimulation and reset by subtraction

    def __init__(self, n_inputs: int, pop_size: int, mean_min: float, mean_max: float, std: float):
        super().__init__()
        self.mean = nn.Parameter(torch.linspace(mean_min, mean_max, pop_size).repeat(n_inputs, 1))
        self.std = nn.Parameter(torch.full((n_inputs, pop_size), std))

    def stimulation(self, obs: torch.Tensor) -> torch.Tensor:
        """A_ik = exp(-(x_i - mu_ik)^2 / (2 sigma_ik^2)), flattened to (B, n * pop_size)."""
        x = obs.float().flatten(1).unsqueeze(-1)
        return torch.exp(-((x - self.mean) ** 2) / (2 * self.std ** 2)).flatten(1)

    def forward(self, obs: torch.Tensor, timesteps: int) -> torch.Tensor:
        a = self.stimulation(obs)
        v = torch.zeros_like(a)
        spikes = []
        # value: the spike; gradient: straight through (fired + a - a differs from fired by
        # rounding, so without a gradient to carry the spikes are exactly 0 or 1)
        through = a.requires_grad and torch.is_grad_enabled()
        for _ in range(timesteps):
            v = v + a.detach()
            fired = (v > ENCODER_THRESHOLD).to(a.dtype)
            v = v - fired * ENCODER_THRESHOLD
            spikes.append(fired + a - a.detach() if through else fired)
        return torch.stack(spikes)


class SpikingActor(SpikingStack):
    """The family's synapse stack with LIF neurons (`compare.core.spiking.SpikingStack`), fed by
    the population encoder (vector observations) or the static frame (pixels); each action's
    output population decoded into one logit."""

    def __init__(self, options: HybridOptions, family: str, obs_shape: tuple[int, ...], n_actions: int):
        bias, out_width = options.bias, n_actions * options.out_pop
        encoder = None
        if family == "classic":  # vector observations enter through the population encoder
            n = math.prod(obs_shape)
            encoder = PopulationEncoder(n, options.pop_size, options.encoder_mean_min,
                                        options.encoder_mean_max, options.encoder_std)
            obs_shape = (n * options.pop_size,)
        synapses = synapse_stack(family, obs_shape, out_width, options.mlp_hidden, bias=bias)
        # With PyTorch's default init the hidden LIF layers are silent at the start
        # (docs/methods/hybrid.md gives the measurement); `weight_gain` makes them fire with
        # init=default; the default init=data rescales every layer that drives LIF neurons
        # (compare.core.liveness).
        spiking_out = options.decoder == "rate"
        super().__init__(scale_weights(synapses, options.weight_gain), lambda: LIFLayer(options.lif),
                         options.timesteps, pixel_divisor(family, options.input_divisor),
                         last="spiking" if spiking_out else "integrator", encoder=encoder,
                         integrator=None if spiking_out else LeakyIntegratorLayer(options.out_tau_mem, options.neuron_impl))
        self.opts = options
        self.n_actions = n_actions
        # PopSAN's decoder: one learnable weight per output neuron and a bias per action.
        self.decoder_weight = nn.Parameter(torch.full((n_actions, options.out_pop), 1.0 / options.out_pop))
        self.decoder_bias = nn.Parameter(torch.zeros(n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        populations = self.run(obs).mean(dim=0).reshape(-1, self.n_actions, self.opts.out_pop)
        return (populations * self.decoder_weight).sum(-1) + self.decoder_bias


HYBRID = TrainedMethod("hybrid", "spiking actor (population-coded, Norse LIF) + ANN critic, PPO (PopSAN, discrete)",
                       HybridOptions, PPOLearner, SpikingActor)
