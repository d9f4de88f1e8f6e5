"""Speck / DYNAP-CNN deployment check and export, without samna.

    chip_layers(ann, input_shape)   ->  the ANN as the chip sees it, checked against its layer rules
    map_to_cores(layers, target)    ->  layer -> core, with sinabs' own max-flow mapping
    ChipSNN(layers, T, ...)         ->  the network as the chip runs it (float or discretized)
    discretize_layers(layers)       ->  sinabs' discretization: 8-bit weights, 16-bit thresholds

Only samna-free parts of sinabs' DYNAP-CNN toolchain are used (`mapping`, `dynapcnn_layer`,
`discretize`), loaded through a bare package module, because the package's own __init__ pulls
in samna, and the PyPI samna is an installer stub that reaches for the network. The chip
configuration itself (`DynapcnnNetwork.make_config`) needs SynSense's real samna; it is built
only when `real_samna_available()`.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import sinabs
import sinabs.layers as sl
import torch
from torch import nn

from compare.core.errors import UsageError
from compare.core.networks import scale_input
from compare.core.provenance import package_versions
from compare.core.runstore import read_json_object
from compare.core.spiking import IAF_OPS, SPIKES, SYNAPSES, CostRoles, SpikingNetwork, sequential_feeds, stack_roles

# target -> sinabs device name for make_config (None: sinabs 3.1 has no config builder for it)
CHIP_TARGETS = {"speck2f": "speck2fdevkit", "speck2e": "speck2edevkit", "dynapcnn": None}
KI = 1024
# (kernel, neuron, bias) memory of cores 0-8, in entries: sinabs' DynapcnnConfigBuilder.
# get_constraints (chips/dynapcnn.py, shared by speck2e/2f); copied because that module imports samna.
CORE_MEMORY = ([(16 * KI, 64 * KI, 1024)] * 3 + [(32 * KI, 32 * KI, 1024)] * 2
               + [(64 * KI, 16 * KI, 1024)] * 2 + [(16 * KI, 16 * KI, 1024)] * 2)
MAX_KERNEL, MAX_CHANNELS, STRIDES, MAX_DESTINATIONS = 16, 1024, (1, 2, 4, 8), 2
SAMNA_HELP = ("the chip configuration needs SynSense's samna (the PyPI 'samna' is an installer "
              "stub); on a machine with internet access: pip install samna --index-url "
              "https://gitlab.com/api/v4/projects/27423070/packages/pypi/simple "
              "(see https://synsense.gitlab.io/sinabs-dynapcnn/), then rerun this export")


def sinabs_dynapcnn(submodule: str) -> types.ModuleType:
    """A samna-free submodule of `sinabs.backend.dynapcnn` (docs/hardware.md, "Chip and library facts")."""
    package = "sinabs.backend.dynapcnn"
    if package not in sys.modules:
        import sinabs.backend

        bare = types.ModuleType(package)
        bare.__path__ = [str(Path(sinabs.backend.__file__).parent / "dynapcnn")]
        sys.modules[package] = bare
    return importlib.import_module(f"{package}.{submodule}")


def real_samna_available() -> bool:
    """True only for SynSense's samna; never imports the package to find out."""
    if "samna" in sys.modules:
        module = sys.modules["samna"]
        return module is not None and not getattr(module, "PYPI_SAMNA", False)
    spec = importlib.util.find_spec("samna")
    if spec is None or spec.origin is None:
        return False
    if "PYPI_SAMNA" in Path(spec.origin).read_text(errors="ignore"):
        return False  # the installer stub
    folder = Path(spec.origin).parent
    return any(folder.glob("*.so")) or any(folder.glob("*.pyd")) or any(folder.glob("*.dylib"))


@dataclass
class ChipLayer:
    """One core's work: a convolution (a Linear becomes a conv over its whole input) and its
    IAF neurons."""

    label: str                       # e.g. "Linear 3136->512", as the ANN has it
    conv: nn.Conv2d
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    memory: dict[str, int]           # kernel, neuron, bias (entries), sinabs' memory_summary()

    @property
    def summary(self) -> str:
        return f"{self.label} ({'x'.join(map(str, self.in_shape))} -> {'x'.join(map(str, self.out_shape))})"


def _label(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}->{layer.out_features}"
    return (f"Conv2d {layer.in_channels}->{layer.out_channels} k{layer.kernel_size[0]} "
            f"s{layer.stride[0]}")


def chip_layers(ann: nn.Sequential, input_shape: tuple[int, int, int]) -> list[ChipLayer]:
    """Walk the ANN (Conv2d/Linear, each followed by a ReLU but the last; Flatten) and check
    each layer against the chip's rules; memory from sinabs' DynapcnnLayer.memory_summary()."""

    dynapcnn_layer = sinabs_dynapcnn("dynapcnn_layer")
    layers: list[ChipLayer] = []
    shape = tuple(input_shape)  # (C, H, W) of the current tensor, before any Flatten
    with torch.no_grad():
        for position, module in enumerate(ann):
            if isinstance(module, (nn.ReLU, nn.Flatten)):
                continue
            if not isinstance(module, SYNAPSES):
                raise UsageError(f"layer {position} ({type(module).__name__}) cannot run on a DYNAP-CNN "
                                 "core; allowed: Conv2d, Linear, ReLU, Flatten")
            label = _label(module)
            in_shape = shape if len(shape) == 3 else (shape[0], 1, 1)
            if isinstance(module, nn.Linear):
                conv = dynapcnn_layer.convert_linear_to_conv(module, in_shape)
            else:
                conv = copy.deepcopy(module)
                k, s = conv.kernel_size, conv.stride
                if k[0] != k[1] or k[0] > MAX_KERNEL:
                    raise UsageError(f"layer {position} ({label}) has a {k[0]}x{k[1]} kernel; the chip "
                                     f"takes square kernels up to {MAX_KERNEL}x{MAX_KERNEL}")
                if s[0] != s[1] or s[0] not in STRIDES:
                    raise UsageError(f"layer {position} ({label}) has stride {s}; allowed: "
                                     f"{', '.join(map(str, STRIDES))} (equal in both directions)")
            if conv.out_channels > MAX_CHANNELS:
                raise UsageError(f"layer {position} ({label}) has {conv.out_channels} output channels; "
                                 f"a core takes at most {MAX_CHANNELS}")
            chip = dynapcnn_layer.DynapcnnLayer(conv, sl.IAFSqueeze(batch_size=1), in_shape,
                                                pool=[[1, 1]], discretize=False)
            out_shape = tuple(int(v) for v in chip.get_neuron_shape())
            layers.append(ChipLayer(label, conv, in_shape, out_shape,
                                    {k: int(v) for k, v in chip.memory_summary().items()}))
            shape = out_shape
    return layers


def map_to_cores(layers: list[ChipLayer], target: str) -> dict[int, int]:
    """Layer index -> core, by sinabs' max-flow mapping; a clear error when a layer fits no core."""
    mapping = sinabs_dynapcnn("mapping")
    dynapcnn_layer = sinabs_dynapcnn("dynapcnn_layer")

    constraints = [mapping.LayerConstraints(k, n, b) for k, n, b in CORE_MEMORY]
    max_kernel = max(k for k, _, _ in CORE_MEMORY)
    max_neuron = max(n for _, n, _ in CORE_MEMORY)
    for i, layer in enumerate(layers):
        m = layer.memory
        fits = [c for c, (k, n, b) in enumerate(CORE_MEMORY)
                if m["kernel"] <= k and m["neuron"] <= n and m["bias"] <= b]
        if not fits:
            raise UsageError(
                f"layer {i} ({layer.label}) does not fit on {target}: it needs {m['kernel'] / KI:g}Ki "
                f"kernel memory and {m['neuron'] / KI:g}Ki neuron memory, but no core has both (the most "
                f"any core offers: {max_kernel // KI}Ki kernel, {max_neuron // KI}Ki neuron memory); use "
                "a smaller network such as --arch speck")
    sinabs_layers = {i: dynapcnn_layer.DynapcnnLayer(layer.conv, sl.IAFSqueeze(batch_size=1),
                                                      layer.in_shape, pool=[[1, 1]], discretize=False)
                     for i, layer in enumerate(layers)}
    try:
        return mapping.get_valid_mapping(sinabs_layers, constraints)
    except ValueError:
        raise UsageError(f"the {len(layers)} layers cannot be placed on the 9 cores of {target} at once "
                         "(each fits some core, but not all together)") from None


def resource_report(layers: list[ChipLayer], cores: dict[int, int], target: str) -> dict:
    rows = []
    for i, layer in enumerate(layers):
        k, n, b = CORE_MEMORY[cores[i]]
        rows.append({"layer": i, "label": layer.label, "in_shape": list(layer.in_shape),
                     "out_shape": list(layer.out_shape), "core": cores[i],
                     "kernel_memory": layer.memory["kernel"], "core_kernel_memory": k,
                     "neuron_memory": layer.memory["neuron"], "core_neuron_memory": n,
                     "bias_memory": layer.memory["bias"], "core_bias_memory": b})
    used = set(cores.values())
    return {"target": target, "layers": rows, "total": {
        "cores_used": len(used), "cores": len(CORE_MEMORY),
        "kernel_memory": sum(r["kernel_memory"] for r in rows),
        "kernel_memory_chip": sum(k for k, _, _ in CORE_MEMORY),
        "neuron_memory": sum(r["neuron_memory"] for r in rows),
        "neuron_memory_chip": sum(n for _, n, _ in CORE_MEMORY)}}


def report_text(report: dict) -> str:
    def ki(v: int) -> str:
        return f"{v / KI:g}Ki" if v >= KI else str(v)

    lines = [f"{report['target']}: layer -> core assignment and memory use", "",
             f"{'layer':<6}{'':<26}{'core':>5}{'kernel mem':>22}{'neuron mem':>22}{'bias':>11}"]
    for r in report["layers"]:
        lines.append(f"{r['layer']:<6}{r['label']:<26}{r['core']:>5}"
                     f"{ki(r['kernel_memory']) + ' / ' + ki(r['core_kernel_memory']):>22}"
                     f"{ki(r['neuron_memory']) + ' / ' + ki(r['core_neuron_memory']):>22}"
                     f"{str(r['bias_memory']) + ' / ' + str(r['core_bias_memory']):>11}")
    t = report["total"]
    lines += ["", f"cores used {t['cores_used']} of {t['cores']}; kernel memory {ki(t['kernel_memory'])} "
              f"of {ki(t['kernel_memory_chip'])}; neuron memory {ki(t['neuron_memory'])} of "
              f"{ki(t['neuron_memory_chip'])}"]
    return "\n".join(lines) + "\n"


def spiking_layers(layers: list[ChipLayer], timesteps: int) -> nn.Sequential:
    """conv -> IAF per core: threshold 1, reset by subtraction, membrane floor at -threshold
    (the chip's membrane has a lower bound; without a finite floor, sinabs' discretization
    would spend the 16-bit range on it and round the weights to {-1, 0, 1})."""

    modules: list[nn.Module] = []
    for layer in layers:
        modules += [copy.deepcopy(layer.conv),
                    sl.IAFSqueeze(spike_threshold=1.0, min_v_mem=-1.0, num_timesteps=timesteps)]
    return nn.Sequential(*modules)


def discretize_layers(model: nn.Sequential) -> tuple[nn.Sequential, list[float]]:
    """sinabs' discretization, one scale per layer shared by its weights, biases, threshold
    and membrane floor (8-bit weights, 16-bit thresholds). Returns the copy and the scales."""
    discretize = sinabs_dynapcnn("discretize")
    modules, scales = [], []
    for conv, spk in zip(model[0::2], model[1::2]):
        threshold = float(spk.spike_threshold)
        q_conv, q_spk = discretize.discretize_conv_spike(conv, spk, to_int=False)
        modules += [q_conv, q_spk]
        scales.append(float(q_spk.spike_threshold) / threshold)
    return nn.Sequential(*modules), scales


def describe_chip_model(model: nn.Sequential) -> list[dict]:
    """Each core's convolution, as export.json records it for `load_chip_model`."""
    return [{"in_channels": conv.in_channels, "out_channels": conv.out_channels,
             "kernel_size": list(conv.kernel_size), "stride": list(conv.stride), "padding": list(conv.padding),
             "bias": conv.bias is not None} for conv in model[0::2]]


def chip_model_weights(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """What model.pt holds: every convolution's weights and every IAF layer's threshold and
    membrane floor (tensors only; the membrane state is not part of the model)."""
    return {key: value for key, value in model.state_dict().items() if key.rsplit(".", 1)[-1] != "v_mem"}


def load_chip_model(folder: Path) -> nn.Sequential:
    """An exported chip model (`compare export --target speck2f ...`) rebuilt from its layer
    description in export.json and its tensors in model.pt (loaded with weights_only=True):
    Conv2d and sinabs IAFSqueeze layers, as `ChipSNN` runs them."""
    record = read_json_object(Path(folder) / "export.json", "compare export record")
    try:
        layers, timesteps = record["chip_layers"], int(record["timesteps"])
        modules: list[nn.Module] = []
        for layer in layers:
            modules += [nn.Conv2d(layer["in_channels"], layer["out_channels"], tuple(layer["kernel_size"]),
                                  stride=tuple(layer["stride"]), padding=tuple(layer["padding"]), bias=layer["bias"]),
                        sl.IAFSqueeze(spike_threshold=1.0, min_v_mem=-1.0, num_timesteps=timesteps)]  # values: model.pt
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{folder}/export.json does not describe a chip model ({type(e).__name__}: {e})") from None
    model = nn.Sequential(*modules)
    try:
        weights = torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except Exception as e:  # damaged, foreign or mismatched file
        raise UsageError(f"{folder}/model.pt is not this chip model's tensors ({type(e).__name__})") from None
    if unexpected or any(key.rsplit(".", 1)[-1] != "v_mem" for key in missing):
        raise UsageError(f"{folder}/model.pt does not match export.json's layers")
    return model


class ChipSNN(SpikingNetwork):
    """A decision as the chip makes it. The host rate-codes the frame (divided by
    `input_divisor`, so pixels lie in [0, 1]) into input spikes with a deterministic IF
    encoder: over T steps a pixel x sends floor(T x) spikes, evenly spread. Every core starts
    the decision from zero membranes; Q is read as the output layer's spike count / T, times
    the output layer's normalization scale (Q units)."""

    def __init__(self, layers: nn.Sequential, timesteps: int, input_divisor: float | None,
                 output_scale: torch.Tensor | float):
        super().__init__()

        self.layers = layers
        self.timesteps = timesteps
        self.input_divisor = input_divisor
        self.output_scale = output_scale

    def cost_roles(self) -> CostRoles:
        """Every core is fed spikes, the first too (the host rate-codes the frame)."""
        synapses = [m for m in self.layers.modules() if isinstance(m, SYNAPSES)]
        neurons = [m for m in self.layers if isinstance(m, sl.StatefulLayer)]
        return CostRoles(self.timesteps, stack_roles(synapses, SPIKES), tuple((m, IAF_OPS) for m in neurons),
                         feeds=sequential_feeds(list(self.layers), neurons))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        x = scale_input(obs, self.input_divisor).clamp(0, 1)
        steps = torch.arange(self.timesteps + 1, dtype=x.dtype).view(-1, *([1] * x.dim()))
        counts = torch.floor(steps * x + 1e-6)  # cumulative spikes after t steps
        spikes = (counts[1:] - counts[:-1]).movedim(0, 1)  # (B, T, ...)
        return spikes.reshape(-1, *x.shape[1:])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        sinabs.reset_states(self.layers)  # zero membranes (resized on a new batch size)
        out = self.layers(self.encode(obs))
        counts = out.reshape(obs.shape[0], self.timesteps, -1).sum(dim=1)
        return counts / self.timesteps * self.output_scale


def write_chip_config(model: nn.Sequential, input_shape: tuple[int, int, int], cores: dict[int, int],
                      target: str, folder: Path) -> str:
    """With SynSense's samna: the configuration `DynapcnnNetwork.make_config` builds, saved in
    `folder`. Returns what happened, in one line (the reason when nothing was written)."""
    device = CHIP_TARGETS[target]
    if not real_samna_available():
        return f"not written: {SAMNA_HELP}"
    if device is None:
        return f"not written: sinabs {package_versions()['sinabs']} has no config builder for {target}"
    # The real package (only now, with SynSense's samna present), not the bare module this file
    # may have put in its place.
    if getattr(sys.modules.get("sinabs.backend.dynapcnn"), "__file__", None) is None:
        sys.modules.pop("sinabs.backend.dynapcnn", None)
    full_package = importlib.import_module("sinabs.backend.dynapcnn")

    network = full_package.DynapcnnNetwork(model, input_shape=input_shape, discretize=True)
    config = network.make_config(layer2core_map=cores, device=device)
    path = folder / "chip_config.json"
    path.write_text(config.to_json())  # untested here: no machine of ours has samna
    return f"written: {path.name}"

