"""Cost of a decision: MACs, synaptic operations, firing rates and 45 nm energy.

One accounting for every method. `CostMeter` hooks a network's synaptic layers (Conv2d,
Linear) and spiking-neuron layers while it decides:
- a synaptic layer fed analog values costs its dense multiply-accumulates (MACs);
- a synaptic layer fed spikes (marked `spike_input = True` by the network that owns it) costs
  one accumulate per spike and outgoing synapse: input spikes x fan-out, summed over T, counted
  exactly (borders and strides included) by running the layer's connectivity on the spikes;
- a spiking-neuron layer (marked `is_spiking = True`) reports its spikes, for firing rates.
Energy (Horowitz 2014, 45 nm): 4.6 pJ per 32-bit float MAC, 0.9 pJ per accumulate.

Two conventions for the first (analog-input) layer of a network that runs T steps per decision
(marked `static_input = True`: it sees the same observation at every step): `once`, its MACs
charged once per decision, as our networks compute it (its current is held for T steps); and
`per_step`, charged at every step, as most SNN energy papers with direct encoding count it (the
chip recomputes it). Both are in the `neuro` block; `compare table --energy` picks one.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

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


def synaptic_ops(layer: nn.Module, spikes: torch.Tensor) -> float:
    """Sum over input spikes of each one's fan-out (the synapses it drives)."""
    with torch.no_grad():
        if isinstance(layer, nn.Conv2d):
            ones = torch.ones_like(layer.weight)
            driven = F.conv2d(spikes.to(ones.dtype), ones, None, layer.stride, layer.padding,
                              layer.dilation, layer.groups)
            return float(driven.sum())
        if isinstance(layer, nn.Linear):
            return float(spikes.sum()) * layer.out_features
    raise TypeError(f"no synaptic-operation count for {type(layer).__name__}")


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

    def __init__(self, network: nn.Module, timesteps: int = 1, synapses: bool = True):
        self.network = network
        self.timesteps = timesteps
        self.synapses = synapses
        self.decisions = 0
        self.macs = 0.0
        self.static_macs = 0.0   # the part of `macs` in static-input layers
        self.synops = 0.0
        self.spikes: dict[str, float] = defaultdict(float)
        self.neuron_steps: dict[str, float] = defaultdict(float)
        self._handles: list = []

    def __enter__(self) -> CostMeter:
        self._handles.append(self.network.register_forward_hook(self._count_decisions))
        for name, module in self.network.named_modules():
            if self.synapses and isinstance(module, (nn.Conv2d, nn.Linear)):
                self._handles.append(module.register_forward_hook(self._count_synapses))
            if getattr(module, "is_spiking", False):
                self._handles.append(module.register_forward_hook(self._spike_counter(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _count_decisions(self, module, inputs, output) -> None:
        self.decisions += inputs[0].shape[0]

    def _count_synapses(self, module, inputs, output) -> None:
        if getattr(module, "spike_input", False):
            self.synops += synaptic_ops(module, inputs[0])
        else:
            macs = dense_macs(module, inputs[0], output)
            self.macs += macs
            if getattr(module, "static_input", False):
                self.static_macs += macs

    def _spike_counter(self, name: str):
        def hook(module, inputs, output) -> None:
            self.spikes[name] += float(output.detach().sum())
            self.neuron_steps[name] += output.numel()
        return hook

    def summary(self) -> dict:
        """The `neuro` block of eval.json: per-decision averages."""
        n = max(1, self.decisions)
        macs, synops = self.macs / n, self.synops / n
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
        firing = self.firing()
        if firing:
            total = sum(self.neuron_steps.values())
            block.update({"firing_rate": firing["firing_rate"],
                          "mean_firing_rate": sum(self.spikes.values()) / total, **firing})
        return block

    def firing(self) -> dict:
        """Firing rates and liveness only ({} for a network without spiking layers)."""
        if not self.spikes:
            return {}
        rates = {name: self.spikes[name] / self.neuron_steps[name] for name in self.spikes}
        return {"firing_rate": rates, **liveness(rates)}
