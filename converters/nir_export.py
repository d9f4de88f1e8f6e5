"""A converted SNN as a NIR graph, and back into sinabs modules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nir
import numpy as np
import sinabs
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn


def converted_to_nir(model: nn.Sequential, obs_shape: tuple[int, ...], timesteps: int):
    """sinabs' NIR graph of a converted network (`converters.convert.spiking_model`), with what
    sinabs.to_nir leaves empty filled in: every Conv2d's input size and every Flatten's input
    type (nir.write needs both; docs/hardware.md, "Chip and library facts"), read off one pass over a zero sample.
    The result passes NIR's type checks (each edge's output and input types agree)."""
    sample = torch.zeros(timesteps, *obs_shape)
    graph = sinabs.to_nir(model, sample)
    inputs: dict[str, tuple[int, ...]] = {}
    hooks = [module.register_forward_pre_hook(
                 lambda m, args, name=name: inputs.__setitem__(name, tuple(args[0].shape[1:])))
             for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Flatten))]
    with torch.no_grad():
        model(sample)
    for hook in hooks:
        hook.remove()
    sinabs.reset_states(model)
    for name, shape in inputs.items():  # rebuilt, so that each node derives its types again
        node = graph.nodes[name]
        if isinstance(node, nir.Conv2d):
            graph.nodes[name] = dataclasses.replace(node, input_shape=shape[-2:])
        else:
            graph.nodes[name] = dataclasses.replace(node, input_type={"input": np.array(shape)})
    return nir.NIRGraph(nodes=graph.nodes, edges=graph.edges)


def load_converted_nir(path: Path, batch_size: int, timesteps: int) -> nn.Module:
    """A converted SNN exported to NIR, loaded with sinabs.from_nir, with its IF neurons put
    back to NIR's (and the converter's) rule: at most one spike per step and no membrane floor
    (sinabs 3.1's reader defaults to MultiSpike and a floor at -threshold). Call as
    `out, state = model(x)` with x of shape (batch_size * timesteps, ...)."""
    model = sinabs.from_nir(nir.read(path), batch_size=batch_size, num_timesteps=timesteps)
    for module in model.modules():
        if isinstance(module, sl.IAF):
            module.min_v_mem = None
            module.spike_fn = sa.SingleSpike
    return model
