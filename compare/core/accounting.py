"""Cost of a decision: MACs, synaptic operations, firing rates and 45 nm energy.

One accounting for every method. `CostMeter` hooks a network's synaptic layers (Conv2d,
Linear) and spiking-neuron layers while it decides, in the roles the network declares
(`compare.core.spiking.SpikingNetwork.cost_roles`; an ANN declares none: all analog, T = 1):
- a synaptic layer fed analog values costs its dense multiply-accumulates (MACs);
- a synaptic layer fed spikes costs one accumulate per spike and outgoing synapse: input
  spikes x fan-out, summed over T, counted exactly (borders and strides included): each
  convolution's fan-out map (synapses driven from each input position) is built once per
  input shape, and a batch's spikes are summed over it;
- a spiking-neuron layer reports its spikes, for firing rates.
Counts stay on the network's device until `summary()` or `firing()` reads them (one sync).
Energy (Horowitz 2014, 45 nm): 4.6 pJ per 32-bit float MAC, 0.9 pJ per accumulate.

Two conventions for the first (analog-input) layer of a network that runs T steps per decision
(role `static`: it sees the same observation at every step): `once`, its MACs charged once per
decision, as our networks compute it (its current is held for T steps); and `per_step`, charged
at every step, as most SNN energy papers with direct encoding count it (the chip recomputes
it). Both are in the `neuro` block; `compare table --energy` picks one.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from compare.core.spiking import ANALOG, SPIKES, STATIC, SYNAPSES, SpikingNetwork

SATURATED_RATE = 0.99  # a spiking layer firing at nearly every step carries no more information than a constant
JOULES_PER_MAC = 4.6e-12
JOULES_PER_AC = 0.9e-12
ENERGY_CAVEAT = ("45 nm compute only (Horowitz 2014); with data movement modelled, SNNs need "
                 "spike rates below ~6% to beat quantized ANNs (arXiv 2409.08290)")


def dense_macs(layer: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor) -> int:
    """Multiply-accumulates of one pass of `layer` over the whole batch."""
    if isinstance(layer, nn.Conv2d):
        per_output = (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
        return outputs.numel() * per_output
    if isinstance(layer, nn.Linear):
        return outputs.numel() * layer.in_features
    raise TypeError(f"no MAC count for {type(layer).__name__}")


def fan_out_map(layer: nn.Module, input_shape: torch.Size) -> torch.Tensor:
    """For one input of `input_shape` (without the batch), the number of synapses each input
    element drives: a convolution's output positions x channels that read it (fewer at borders
    and where a stride skips it), a linear layer's out_features."""
    if isinstance(layer, nn.Conv2d):
        ones = torch.ones_like(layer.weight)
        out = F.conv2d(torch.zeros(1, *input_shape, device=ones.device), ones, None, layer.stride,
                       layer.padding, layer.dilation, layer.groups)
        return torch.nn.grad.conv2d_input((1, *input_shape), ones, torch.ones_like(out), layer.stride,
                                          layer.padding, layer.dilation, layer.groups)[0].double()
    if isinstance(layer, nn.Linear):
        return torch.full(input_shape, float(layer.out_features), dtype=torch.float64, device=layer.weight.device)
    raise TypeError(f"no synaptic-operation count for {type(layer).__name__}")


def spike_fan_out(spikes: torch.Tensor, fan_out: torch.Tensor) -> torch.Tensor:
    """Sum over a batch of input spikes of each one's fan-out (`fan_out` in float64): a float64
    scalar tensor. The per-element counts are summed in float32 (exact below 2^24 spikes per
    element, and several times faster), the products in float64."""
    counts = spikes.detach().sum(dim=0).flatten().to(torch.float64)
    return torch.dot(counts, fan_out.flatten())


def synaptic_ops(layer: nn.Module, spikes: torch.Tensor) -> float:
    """Sum over input spikes of each one's fan-out (the synapses it drives)."""
    with torch.no_grad():
        return float(spike_fan_out(spikes, fan_out_map(layer, spikes.shape[1:])))


def liveness(firing_rate: dict[str, float]) -> dict:
    """Spiking layers that never fired (no gradient reaches the layers below them, and a
    Q-network's output is constant) and layers firing at nearly every step."""
    return {"silent_layers": [name for name, rate in firing_rate.items() if rate == 0.0],
            "saturated_layers": [name for name, rate in firing_rate.items() if rate >= SATURATED_RATE]}


def liveness_warning(where: str, record: dict) -> str | None:
    """One line naming a network's silent or saturated spiking layers, or None."""
    parts = [f"{kind} {', '.join(record[key])}" for key, kind in
             (("silent_layers", "silent (firing rate 0)"), ("saturated_layers", f"saturated (rate >= {SATURATED_RATE})"))
             if record.get(key)]
    return f"compare: warning: {where}: spiking layers {'; '.join(parts)}" if parts else None


class CostMeter:
    """Accumulates the cost of every decision a network makes while attached (`synapses=False`:
    firing rates only, as the liveness checks need)."""

    def __init__(self, network: nn.Module, synapses: bool = True):
        self.network = network
        self.synapses = synapses
        roles = network.cost_roles() if isinstance(network, SpikingNetwork) else None
        self.timesteps = 1 if roles is None else roles.timesteps
        if roles is None:
            self._roles = {m: ANALOG for m in network.modules() if isinstance(m, SYNAPSES)}
        else:
            self._roles = dict(roles.synapses)
            unknown = [m for m in network.modules() if isinstance(m, SYNAPSES) and m not in self._roles]
            if unknown:  # a layer the network forgot to declare would be costed in no role
                raise TypeError(f"{type(network).__name__}.cost_roles() leaves out {len(unknown)} synaptic layer(s)")
        names = {module: name for name, module in network.named_modules()}
        self._neurons = {} if roles is None else {m: names[m] for m in roles.neurons}
        self.decisions = 0
        self.macs = 0            # dense MACs: shapes only, counted on the host
        self.static_macs = 0     # the part of `macs` in static-input layers
        self._synops: torch.Tensor | float = 0.0
        self._spikes: dict[str, torch.Tensor | float] = defaultdict(float)
        self.neuron_steps: dict[str, int] = defaultdict(int)
        self._fan_out: dict[tuple[nn.Module, torch.Size], torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> CostMeter:
        self._handles.append(self.network.register_forward_hook(self._count_decisions))
        if self.synapses:
            for module in self._roles:
                self._handles.append(module.register_forward_hook(self._count_synapses))
        for module, name in self._neurons.items():
            self._handles.append(module.register_forward_hook(self._spike_counter(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _count_decisions(self, module, inputs, output) -> None:
        self.decisions += inputs[0].shape[0]

    def _count_synapses(self, module, inputs, output) -> None:
        role, x = self._roles[module], inputs[0]
        if role == SPIKES:
            key = (module, x.shape[1:])
            if key not in self._fan_out:
                self._fan_out[key] = fan_out_map(module, x.shape[1:])
            self._synops = self._synops + spike_fan_out(x, self._fan_out[key])
        else:
            macs = dense_macs(module, x, output)
            self.macs += macs
            if role == STATIC:
                self.static_macs += macs

    def _spike_counter(self, name: str):
        def hook(module, inputs, output) -> None:
            # summed in float32 (exact below 2^24 spikes per call), accumulated in float64
            self._spikes[name] = self._spikes[name] + output.detach().sum().double()
            self.neuron_steps[name] += output.numel()
        return hook

    def _spike_totals(self) -> dict[str, float]:
        return {name: float(count) for name, count in self._spikes.items()}

    def summary(self) -> dict:
        """The `neuro` block of eval.json: per-decision averages."""
        n = max(1, self.decisions)
        macs, synops = self.macs / n, float(self._synops) / n
        per_step_macs = macs + (self.timesteps - 1) * self.static_macs / n
        conventions = {name: {"macs_per_decision": m,
                              "energy_per_decision_j": m * JOULES_PER_MAC + synops * JOULES_PER_AC}
                       for name, m in (("once", macs), ("per_step", per_step_macs))}
        block = {"timesteps": self.timesteps,
                 "macs_per_decision": macs,
                 "synops_per_decision": synops,
                 "energy_per_decision_j": conventions["once"]["energy_per_decision_j"],
                 "first_layer": conventions,   # energy under both conventions (module docstring)
                 "decisions": self.decisions,
                 "energy_note": ENERGY_CAVEAT}
        spikes = self._spike_totals()
        firing = self.firing(spikes)
        if firing:
            total = sum(self.neuron_steps.values())
            block.update({"firing_rate": firing["firing_rate"],
                          "mean_firing_rate": sum(spikes.values()) / total, **firing})
        return block

    def firing(self, spikes: dict[str, float] | None = None) -> dict:
        """Firing rates and liveness only ({} for a network without spiking layers)."""
        spikes = self._spike_totals() if spikes is None else spikes
        if not spikes:
            return {}
        rates = {name: spikes[name] / self.neuron_steps[name] for name in spikes}
        return {"firing_rate": rates, **liveness(rates)}
