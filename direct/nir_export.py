"""A trained DSQN as a NIR graph, and back into Norse modules.

The graph holds one time step of the network: synapses (Conv2d / Affine), LIF layers and, for
the membrane readout, the non-spiking leaky-integrator output (NIR `LI`). Time constants are in
seconds with dt = 1 ms (tau_mem = 2 steps -> 0.002 s), Norse's `from_nir` default. What lies
outside the graph, and is recorded in export.json: dividing frames by `input_divisor`, feeding
the same observation for T steps from zero states, and decoding the T outputs (max / mean /
last / max-abs of the membrane; the mean for the rate readout).

Norse 1.1's `from_nir` has no `LI` node, and builds a NIR Flatten as `torch.nn.Flatten` with
the same dims, though NIR's types exclude the batch axis and torch's include it;
`load_dsqn_nir` therefore maps LI to Norse's own `LIBoxCell` and Flatten to torch's with the
batch axis added, and hands every other node to Norse's importer. The graph passes NIR's own
type checks (`NIRGraph._check_types`: each edge's output and input types agree).
"""

from __future__ import annotations

from pathlib import Path

import nir
import nirtorch
import numpy as np
import torch
from norse.torch.module.leaky_integrator_box import LIBoxCell, LIBoxParameters
from norse.torch.utils.import_nir import _import_norse_module
from torch import nn

from compare.core.errors import UsageError
from compare.core.methods import ExportOptions
from compare.core.runstore import Run, write_serialized
from compare.core.training import load_deployed, observation_shape
from direct.dsqn import SpikingQNetwork

DT = 1e-3  # seconds per simulation step in the graph


def _array(t: torch.Tensor | None, n: int | None = None) -> np.ndarray:
    return np.zeros(n, dtype=np.float32) if t is None else t.detach().cpu().numpy().astype(np.float32)


def dsqn_to_nir(net: SpikingQNetwork, obs_shape: tuple[int, ...]):
    lif = net.opts.lif
    if lif.reset != "hard" or lif.v_reset != 0.0:
        raise UsageError(f"this DSQN uses reset={lif.reset}, v_reset={lif.v_reset}; NIR's LIF (and Norse's "
                         "importer) reset to zero, so only reset=hard with v_reset=0 exports")
    nodes = {"input": nir.Input(input_type={"input": np.array(obs_shape)})}
    edges, previous = [], "input"

    def add(name, node):
        nonlocal previous
        nodes[name] = node
        edges.append((previous, name))
        previous = name

    x = torch.zeros(1, *obs_shape)
    with torch.no_grad():
        for i, synapse in enumerate(net.synapses):
            if isinstance(synapse, nn.Linear) and x.dim() > 2:
                # NIR types have no batch axis: flattening (C, H, W) whole is start_dim 0.
                add("flatten", nir.Flatten(input_type={"input": np.array(x.shape[1:])}, start_dim=0))
                x = x.flatten(1)
            if isinstance(synapse, nn.Conv2d):
                add(f"conv{i}", nir.Conv2d(
                    input_shape=tuple(x.shape[-2:]), weight=_array(synapse.weight),
                    stride=synapse.stride, padding=synapse.padding, dilation=synapse.dilation,
                    groups=synapse.groups, bias=_array(synapse.bias, synapse.out_channels)))
            else:
                add(f"fc{i}", nir.Affine(weight=_array(synapse.weight),
                                         bias=_array(synapse.bias, synapse.out_features)))
            x = synapse(x)
            shape = tuple(x.shape[1:])
            if i < len(net.lifs):
                add(f"lif{i}", nir.LIF(tau=np.full(shape, lif.tau_mem * DT, np.float32),
                                       r=np.ones(shape, np.float32), v_leak=np.zeros(shape, np.float32),
                                       v_threshold=np.full(shape, lif.v_th, np.float32)))
    if net.output is not None:
        n = x.shape[1]
        add("li", nir.LI(tau=np.full(n, net.output.tau_mem * DT, np.float32), r=np.ones(n, np.float32),
                         v_leak=np.zeros(n, np.float32)))
    add("output", nir.Output(output_type={"output": np.array(x.shape[1:])}))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def load_dsqn_nir(graph) -> nn.Module:
    """Norse modules for a DSQN graph: call as `out, state = model(x, state)` per step."""
    def import_node(node):
        if isinstance(node, nir.Flatten):  # NIR's dims exclude the batch axis, torch's include it
            return nn.Flatten(node.start_dim + 1, node.end_dim if node.end_dim < 0 else node.end_dim + 1)
        if isinstance(node, nir.LI):
            return LIBoxCell(LIBoxParameters(tau_mem_inv=1 / torch.as_tensor(node.tau, dtype=torch.float32),
                                             v_leak=torch.as_tensor(node.v_leak, dtype=torch.float32)),
                             dt=DT)
        return _import_norse_module(node, dt=DT)

    return nirtorch.load(graph, import_node)


def export_dsqn_nir(run: Run, target: str, folder: Path, options: ExportOptions, echo) -> dict:
    """A finished run whose deployed network is a `SpikingQNetwork`, as a NIR graph
    (`compare export --target nir`; the app writes and renames the folder)."""
    deployed = load_deployed(run.path, "cpu")
    settings, spec, net = deployed.settings, deployed.spec, deployed.network
    if not isinstance(net, SpikingQNetwork):
        raise UsageError(f"{run.path}'s network is a {type(net).__name__}; this NIR export takes a SpikingQNetwork")
    if options.timesteps is not None and options.timesteps != net.timesteps:
        raise UsageError(f"this DSQN was trained with T={net.timesteps}; --timesteps must match or be left out")
    graph = dsqn_to_nir(net, observation_shape(spec, settings.protocol)[0])
    meta = {"timesteps": net.timesteps, "dt_seconds": 1e-3,
            "neuron": "LIF without synaptic current: v <- v + dt/tau (v_leak - v + r x), tau in seconds",
            "reset": f"hard: v <- {net.opts.v_reset:g} after a spike",
            "input": (f"the observation divided by {net.input_divisor:g}" if net.input_divisor else
                      "the observation as the environment gives it") + ", the same at each of T steps",
            "readout": net.opts.readout,
            "decoding": (f"{net.opts.decoder} over T of the output membrane" if net.output is not None
                         else "mean over T of the output"),
            "initial_state": "zero membranes at the start of every decision"}
    graph.metadata = {**meta, "exporter": "compare"}
    write_serialized(folder / "model.nir", lambda buffer: nir.write(buffer, graph))
    return {"game": settings.game, "seed": settings.seed, "file": "model.nir", **meta,
            "load": "direct.nir_export.load_dsqn_nir(nir.read(path)) (Norse modules; norse's from_nir "
                    "lacks the LI output node and flattens the batch axis)"}
