"""What a spiking network declares, and the one builder of the directly trained ones.

A spiking network runs T time steps per decision. Every spiking network here is a
`SpikingNetwork`: it declares T, how it scales observations, and the cost role of each of its
synaptic layers (`cost_roles`), which is all `compare.core.accounting` needs to cost it:

- `STATIC`: fed the analog observation, the same at every step (its current is computed once);
- `ANALOG`: fed other real values (a readout of mean spike rates), dense MACs;
- `SPIKES`: fed spikes, one accumulate per spike and synapse it drives;

and its stateful neuron layers, each with the arithmetic of one update (`NeuronOps`): the
spiking ones (firing rates, membrane updates) and non-spiking integrators (a membrane readout).
A network that is not a `SpikingNetwork` is an ANN: T = 1 and every synaptic layer `ANALOG`.

`SpikingStack` is the builder: it interleaves a family's synapse stack
(`compare.core.networks.synapse_stack`, the ANN's own layers) with layers from a neuron factory,
as the ANN interleaves it with ReLUs, and derives every role from that structure. The DSQN and
the hybrid's actor are built on it; the converted network and the chip model (sinabs layers in
(B*T, ...) batches) declare their roles with `stack_roles`, the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from compare.core.networks import scale_input

STATIC, ANALOG, SPIKES = "static", "analog", "spikes"
Role = Literal["static", "analog", "spikes"]
SYNAPSES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class NeuronOps:
    """The arithmetic of one neuron's update at one time step, as the layer computes it (what an
    energy model prices), and the state words it keeps between steps."""
    adds: int
    mults: int
    state_words: int = 1


# v <- v + (x - v) / tau (two adds, one multiply), then the threshold comparison (one add)
LIF_OPS = NeuronOps(adds=3, mults=1)
# v <- v + x, then the threshold comparison (integrate-and-fire; its reset by subtraction on a
# spike is not counted)
IAF_OPS = NeuronOps(adds=2, mults=0)
# v <- v + (x - v) / tau, no threshold (a non-spiking membrane readout)
LI_OPS = NeuronOps(adds=2, mults=1)


@dataclass(frozen=True)
class CostRoles:
    timesteps: int
    synapses: tuple[tuple[nn.Module, Role], ...]    # every synaptic layer, input to output
    neurons: tuple[tuple[nn.Module, NeuronOps], ...]  # spiking-neuron layers (their output: spikes)
    integrators: tuple[tuple[nn.Module, NeuronOps], ...] = ()  # non-spiking neuron layers
    # (neuron layer, synaptic layer fed all of its spikes and nothing else): the meter counts
    # those spikes once, at the synaptic layer
    feeds: tuple[tuple[nn.Module, nn.Module], ...] = ()


def sequential_feeds(modules: Sequence[nn.Module], neurons: Sequence[nn.Module]) -> tuple[tuple[nn.Module, nn.Module], ...]:
    """The feeds of a sequential stack: each neuron layer feeds the next synaptic layer, with
    only shape changes (a Flatten) between them."""
    feeds, pending = [], None
    for module in modules:
        if any(module is n for n in neurons):
            pending = module
        elif isinstance(module, SYNAPSES):
            if pending is not None:
                feeds.append((pending, module))
            pending = None
        elif not isinstance(module, nn.Flatten):
            pending = None
    return tuple(feeds)


def stack_roles(synapses: Sequence[nn.Module], first: Role, last: Role = SPIKES) -> tuple[tuple[nn.Module, Role], ...]:
    """The roles of a stack whose first synaptic layer is fed `first` (the observation:
    STATIC; an encoder's spikes: SPIKES), whose hidden layers are fed spikes, and whose last
    layer is fed `last` (ANALOG when it reads mean spike rates)."""
    roles = [first] + [SPIKES] * (len(synapses) - 1)
    if len(synapses) > 1:
        roles[-1] = last
    return tuple(zip(synapses, roles))


class SpikingNetwork(nn.Module):
    """Base of every spiking network: `timesteps` (T per decision), `input_divisor` (what
    observations are divided by; None: used as they are) and `cost_roles()`."""

    timesteps: int
    input_divisor: float | None

    def cost_roles(self) -> CostRoles:
        raise NotImplementedError


def all_steps(layer: nn.Module, s: torch.Tensor) -> torch.Tensor:
    """Apply a synaptic layer to (T, B, ...) spikes as one (T*B, ...) batch."""
    T, B = s.shape[:2]
    flat = s.reshape(T * B, -1) if isinstance(layer, nn.Linear) else s.reshape(T * B, *s.shape[2:])
    y = layer(flat)
    return y.reshape(T, B, *y.shape[1:])


class SpikingStack(SpikingNetwork):
    """A synapse stack interleaved with neuron layers, time-major, T steps per decision.

    `neuron()` builds the spiking layer after every synaptic layer but the last. Neuron layers,
    the encoder and the integrator state what one update computes (`update_ops`, a `NeuronOps`). After the last
    (`last`): `"spiking"`, one more `neuron()`; `"integrator"`, the non-spiking `integrator`
    (a membrane readout); `"rate"`, nothing: the last layer reads the mean spike rate of the
    layer before it. Neuron layers take (T, B, ...) currents, or a static (B, ...) current and
    `timesteps=T`. Without `encoder` the observation, scaled, drives the first layer at every
    step (its current is computed once); with one, `encoder(obs, T)` turns it into (T, B, n)
    spikes first. `run` gives the last layer's output: (T, B, n) spikes or membranes, or
    (B, n) for `"rate"`; subclasses decode it.
    """

    def __init__(self, synapses: list[nn.Module], neuron: Callable[[], nn.Module], timesteps: int,
                 input_divisor: float | None, last: Literal["spiking", "integrator", "rate"],
                 integrator: nn.Module | None = None, encoder: nn.Module | None = None):
        super().__init__()
        self.timesteps, self.input_divisor, self.last = timesteps, input_divisor, last
        self.encoder = encoder
        self.synapses = nn.ModuleList(synapses)
        self.lifs = nn.ModuleList(neuron() for _ in synapses[: len(synapses) - (last != "spiking")])
        self.output = integrator if last == "integrator" else None

    def cost_roles(self) -> CostRoles:
        encoder = () if self.encoder is None else (self.encoder,)
        # each spiking layer's spikes go, unchanged, to the next synaptic layer (a "rate"
        # readout's last layer reads their mean instead)
        fed = [*encoder, *self.lifs][: len(self.synapses) - (not encoder) - (self.last == "rate")]
        return CostRoles(self.timesteps,
                         stack_roles(self.synapses, SPIKES if encoder else STATIC, ANALOG if self.last == "rate" else SPIKES),
                         tuple((m, m.update_ops) for m in (*encoder, *self.lifs)),
                         () if self.output is None else ((self.output, self.output.update_ops),),
                         tuple(zip(fed, self.synapses[1 - len(encoder):])))

    def init_layers(self) -> list[tuple[nn.Module, str]]:
        """(synaptic layer, name of the neuron layer it drives) for every spiking layer after a
        synaptic one, first to last: what a data-driven initialisation scales and measures
        (`layer_spikes(i, ...)` computes the i-th one's spikes)."""
        return [(self.synapses[i], f"lifs.{i}") for i in range(len(self.lifs))]

    def first_current(self, obs: torch.Tensor) -> torch.Tensor:
        """The first synaptic layer's current from a static observation, (B, ...)."""
        return self.synapses[0](scale_input(obs, self.input_divisor))

    def layer_spikes(self, i: int, inputs: torch.Tensor) -> torch.Tensor:
        """The (T, B, ...) spikes of neuron layer `lifs[i]` from what its synaptic layer reads:
        the observation for i = 0, the spikes of `lifs[i - 1]` after it (one step of `run`)."""
        if i > 0:
            return self.lifs[i](all_steps(self.synapses[i], inputs))
        if self.encoder is None:  # static input: the first synaptic current is computed once
            return self.lifs[0](self.first_current(inputs), timesteps=self.timesteps)
        return self.lifs[0](all_steps(self.synapses[0], self.encoder(inputs, self.timesteps)))

    def run(self, obs: torch.Tensor) -> torch.Tensor:
        spikes = self.layer_spikes(0, obs)
        for i in range(1, len(self.synapses)):
            if i == len(self.lifs):
                if self.output is None:  # "rate"
                    return self.synapses[i](spikes.mean(dim=0).flatten(1))
                return self.output(all_steps(self.synapses[i], spikes))
            spikes = self.layer_spikes(i, spikes)
        return spikes
