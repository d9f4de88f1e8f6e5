"""Spiking networks that fire from the first step, and runs that say when one does not.

A spiking layer that never fires passes no gradient to the layers below it, and a Q-network
whose layers are silent outputs constants. Two tools, used by every trained run:

- `data_driven_scales`: a data-driven initialisation (the method's `init=data`). Each synaptic
  layer that drives spiking neurons (the network's `init_layers()`, first to last) is rescaled,
  weight and bias together, so that the neurons it drives fire at a target rate on observations
  of the run's own environment; each layer is set on the spikes of the layers already set. The
  rate is found by bisection on log2 of the scale. The scales are recorded in config.json
  (`init_scales`) and reapplied by the run, so a run is reproducible and inspectable.
- `liveness_at_start`: the firing rates of the network as the run initialises it, on other
  observations (their own seed stream), recorded in config.json with a one-line warning for a
  silent or saturated layer; periodic and final evaluations record the same
  (compare.core.learner, compare.core.accounting).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from compare.core.accounting import CostMeter
from compare.core.envs import EnvSpec
from compare.core.evaluation import random_observations

LIVENESS_OBSERVATIONS = 256
LOG2_SCALE_RANGE = (-8.0, 12.0)   # scales from 1/256 to 4096 x the layer's initial weights
BISECTION_STEPS = 12              # the scale to within a factor 2^(20 / 4096) ~ 1.003


def firing(network: nn.Module, observations: torch.Tensor) -> dict:
    """Firing rates and silent/saturated layers of `network` on one pass over `observations`
    ({} for a network without spiking layers)."""
    with CostMeter(network, synapses=False) as meter, torch.inference_mode():
        network(observations)
    return meter.firing()


def _rescale(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, scale: float) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight * scale)
        if bias is not None:
            layer.bias.copy_(bias * scale)


def spike_rate(spikes: torch.Tensor) -> float:
    """The firing rate of one layer's spikes as `CostMeter` counts it (summed in float32, exact
    below 2^24 spikes, divided in float64)."""
    return float(spikes.sum().double()) / spikes.numel()


def layer_rate(network: nn.Module, i: int, inputs: torch.Tensor) -> float:
    """The firing rate of the network's i-th spiking layer on `inputs` (`layer_spikes`)."""
    with torch.inference_mode():
        return spike_rate(network.layer_spikes(i, inputs))


def bisect_scale(layer: nn.Module, rate: float, rate_now: Callable[[], float]) -> float:
    """Scale `layer` (weight and bias) by the factor, found by bisection on its log2, at which
    `rate_now()` (the firing rate of the neurons it drives) reaches `rate`; leaves it scaled."""
    weight = layer.weight.detach().clone()
    bias = None if layer.bias is None else layer.bias.detach().clone()
    low, high = LOG2_SCALE_RANGE
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        _rescale(layer, weight, bias, 2.0 ** middle)
        if rate_now() < rate:
            low = middle
        else:
            high = middle
    scale = 2.0 ** ((low + high) / 2)
    _rescale(layer, weight, bias, scale)
    return scale


def data_driven_scales(network: nn.Module, observations: torch.Tensor, rate: float) -> dict[str, float]:
    """Rescale `network` in place (see the module docstring); the scale of each layer by name.

    Layer i's neurons depend on layers 0..i only, and those before it are set when it is: each
    bisection step runs layer i alone on the spikes of layer i - 1 (`layer_spikes`, computed
    once), the very values a forward through the whole network would give it."""
    names = {id(module): name for name, module in network.named_modules()}
    layers = network.init_layers()
    scales = {}
    was_training = network.training
    network.eval()
    inputs = observations
    for i, (layer, _) in enumerate(layers):
        scales[names[id(layer)]] = bisect_scale(layer, rate, partial(layer_rate, network, i, inputs))
        if i + 1 < len(layers):  # the next layer's input, now that this one is set
            with torch.inference_mode():
                inputs = network.layer_spikes(i, inputs)
    network.train(was_training)
    return scales


def apply_scales(network: nn.Module, scales: dict[str, float]) -> None:
    """Reapply recorded `init_scales` to a freshly built network."""
    with torch.no_grad():
        for name, scale in scales.items():
            layer = network.get_submodule(name)
            layer.weight.mul_(scale)
            if layer.bias is not None:
                layer.bias.mul_(scale)


def initial_scales(network: nn.Module, options, spec: EnvSpec, protocol, seed: int) -> dict[str, float] | None:
    """The data-driven scales of a new run's deployed network (None unless `init=data`)."""
    if getattr(options, "init", "default") != "data":
        return None
    observations = torch.as_tensor(random_observations(spec, protocol, options.init_observations, seed, "init"))
    return data_driven_scales(network, observations, options.init_rate)


def liveness_at_start(network: nn.Module, spec: EnvSpec, protocol, seed: int,
                      count: int = LIVENESS_OBSERVATIONS) -> dict:
    """Firing rates and silent/saturated layers of a new network on `count` random-policy
    observations (seed stream "liveness"); {} for a network without spiking layers."""
    observations = torch.as_tensor(random_observations(spec, protocol, count, seed, "liveness"))
    was_training = network.training
    found = firing(network.eval(), observations)
    network.train(was_training)
    return {"observations": count, **found} if found else {}
