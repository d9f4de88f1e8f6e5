"""Cost of a decision: operations, neuron updates, spikes and firing rates, counted once.

One accounting for every method. `CostMeter` hooks a network's synaptic layers (Conv2d,
Linear) and neuron layers while it decides, in the roles the network declares
(`compare.core.spiking.SpikingNetwork.cost_roles`; an ANN declares none: all analog, T = 1):
- a synaptic layer costs its dense multiply-accumulates (MACs) and the accumulates of its
  non-zero inputs: each non-zero input (a spike) x its fan-out, summed over T, counted exactly
  (borders and strides included): each convolution's fan-out map (synapses driven from each
  input position) is built once per input shape, and a batch's inputs are summed over it;
- a neuron layer reports its updates and spikes (firing rates, membrane updates).
Counts stay on the network's device until `summary()` or `firing()` reads them (one sync).
`summary()` writes them per decision (`counts`), the energy under every model of
`compare.core.energy` (`energy`), and NeuroBench's metrics (`neurobench`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compare.core.energy import FLOAT_BITS, all_estimates
from compare.core.spiking import ANALOG, SPIKES, SYNAPSES, SpikingNetwork

SATURATED_RATE = 0.99  # a spiking layer firing at nearly every step carries no more information than a constant
ENERGY_NOTE = ("estimates under three models (compare.core.energy): compute only, + neuron updates, "
               "+ memory traffic; 45 nm (Horowitz 2014), SRAM after Lemaire et al. 2022")


class QuantizedNetwork(nn.Module):
    """Base of an ANN that computes at integer precision: the widths its energy is priced at."""

    weight_bits: int
    activation_bits: int


def fan_in(layer: nn.Module) -> int:
    """Synapses into one output element of `layer` (its MACs per output)."""
    if isinstance(layer, nn.Conv2d):
        return (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, nn.Linear):
        return layer.in_features
    raise TypeError(f"no MAC count for {type(layer).__name__}")


def dense_macs(layer: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor) -> int:
    """Multiply-accumulates of one pass of `layer` over the whole batch."""
    return outputs.numel() * fan_in(layer)


def fan_out_map(layer: nn.Module, input_shape: torch.Size, nonzero_weights: bool = False) -> torch.Tensor:
    """For one input of `input_shape` (without the batch), the number of synapses each input
    element drives: a convolution's output positions x channels that read it (fewer at borders
    and where a stride skips it), a linear layer's out_features; with `nonzero_weights`, only
    the synapses whose weight is not zero (NeuroBench's count). float64."""
    with torch.no_grad():
        kernel = (layer.weight != 0).to(layer.weight.dtype) if nonzero_weights else torch.ones_like(layer.weight)
        if isinstance(layer, nn.Conv2d):
            out = F.conv2d(torch.zeros(1, *input_shape, device=kernel.device), kernel, None, layer.stride,
                           layer.padding, layer.dilation, layer.groups)
            return torch.nn.grad.conv2d_input((1, *input_shape), kernel, torch.ones_like(out), layer.stride,
                                              layer.padding, layer.dilation, layer.groups)[0].double()
        if isinstance(layer, nn.Linear):
            return kernel.sum(dim=0).double().reshape(input_shape)
    raise TypeError(f"no synaptic-operation count for {type(layer).__name__}")


def synaptic_ops(layer: nn.Module, spikes: torch.Tensor) -> float:
    """Sum over a batch of input spikes of each one's fan-out (the synapses it drives). The
    per-element counts are summed in float32 (exact below 2^24 spikes per element, and several
    times faster than float64), the products in float64."""
    count = LayerCount("", SPIKES, fan_in(layer))
    with torch.no_grad():
        count.count(layer, spikes, 0)
    return count.operations(nonzero_weights=False)


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


# Rows a shape's float32 running counts take before they are folded into float64: 2^16 rows of
# fewer than 256 spikes per element each stay below float32's exact integers (2^24).
ROWS_PER_FOLD = 2**16


class ShapeCount:
    """A synaptic layer's counts for inputs of one shape: how often each input element was
    non-zero (spikes: how often it spiked), added in place into a float32 running sum and
    folded into a float64 total every ROWS_PER_FOLD rows, and the fan-out maps the counts are
    multiplied with at the end. A call adds its batch as one product with a vector of ones (its
    column sums), so that a decision pays one or two small operations per layer; every
    operation stays in float (on a CPU an operation with a bool result costs several times
    one with a float result)."""

    def __init__(self, module: nn.Module, shape: torch.Size, device: torch.device):
        with torch.inference_mode(False):  # ordinary tensors, added to in and out of inference mode
            self.total = torch.zeros(shape.numel(), dtype=torch.float64, device=device)
            self.running = torch.zeros(shape.numel(), dtype=torch.float32, device=device)
        self.rows = 0
        self.ones: dict[int, torch.Tensor] = {}  # batch size -> ones
        self.every = fan_out_map(module, shape).flatten()
        self.nonzero_weights = fan_out_map(module, shape, nonzero_weights=True).flatten()

    def add(self, nonzero: torch.Tensor) -> None:
        """Add a (rows, elements) batch of non-zero indicators (spikes: their counts)."""
        rows = nonzero.shape[0]
        if self.rows + rows > ROWS_PER_FOLD:
            self.fold()
        ones = self.ones.get(rows)
        if ones is None:
            with torch.inference_mode(False):
                ones = self.ones[rows] = torch.ones(rows, dtype=torch.float32, device=nonzero.device)
        self.running.addmv_(nonzero.t().float(), ones)
        self.rows += rows

    def fold(self) -> torch.Tensor:
        """The float64 counts so far."""
        if self.rows:
            self.total.add_(self.running)
            self.running.zero_()
            self.rows = 0
        return self.total


@dataclass
class LayerCount:
    """One synaptic layer over the evaluation: per input shape a `ShapeCount`; the products
    with the fan-out maps are taken once, at the end."""

    name: str
    role: str
    fan_in: int                                    # synapses into one output element
    binary: bool = True                            # every input seen was in {-1, 0, 1}
    counts: dict = field(default_factory=dict)     # input shape -> ShapeCount
    passes: int = 0                                # inputs (batch elements) it was applied to
    outputs: int = 0                               # output elements it computed
    inputs: int = 0                                # input elements it read
    input_size: int = 0                            # elements of one input
    output_size: int = 0                           # elements of one output

    @property
    def dense(self) -> int:
        """Every input x every synapse (NeuroBench's Dense): its MACs."""
        return self.outputs * self.fan_in

    def count(self, module: nn.Module, x: torch.Tensor, output_size: int) -> None:
        """Count one call's inputs `x` (batch first). Spikes are their own counts; other inputs
        count where they are not zero (a NaN counts as zero), and `binary` says whether every
        input so far was in {-1, 0, 1} (each equal to its sign; read on the host until the
        first that is not, then never again). A new shape builds its fan-out maps and sets the
        sizes."""
        shape = x.shape[1:]
        entry = self.counts.get(shape)
        if entry is None:
            entry = self.counts[shape] = ShapeCount(module, shape, x.device)
            self.input_size, self.output_size = shape.numel(), output_size
        flat = x if x.dim() == 2 else x.flatten(1)
        if self.role != SPIKES:
            signs = flat.sign()
            if self.binary:
                self.binary = torch.equal(signs, flat)  # only -1, 0 and 1 equal their signs
            flat = signs.abs_()  # 1 where the input is not zero (a NaN's sign is 0)
        entry.add(flat)
        self.inputs += x.numel()

    def nonzero_inputs(self) -> float:
        return sum(float(c.fold().sum()) for c in self.counts.values())

    def operations(self, nonzero_weights: bool) -> float:
        """Sum over inputs of each one's fan-out (of non-zero weights only, or of every synapse)."""
        return sum(float(torch.dot(c.fold(), c.nonzero_weights if nonzero_weights else c.every))
                   for c in self.counts.values())


def after_each_forward(module: nn.Module, counter: Callable[[nn.Module, tuple, object], None]) -> Callable[[], None]:
    """Call `counter(module, positional inputs, output)` after every forward of `module`, as a
    forward hook would, until the returned function is called. The module's `forward` is
    wrapped (an instance attribute) instead of hooked: a module with a hook takes torch's
    general call path (five empty hooks: a MinAtar DSQN decision 1.04-1.05x, five empty
    wrappers 1.02-1.03x; docs/energy.md). Meters nest when they are left in the reverse order of entering."""
    inner = module.forward  # the bound method, or the wrapper of a meter entered before
    had_own = "forward" in module.__dict__

    def forward(*args, **kwargs):
        output = inner(*args, **kwargs)
        counter(module, args, output)
        return output

    module.forward = forward

    def undo() -> None:
        if had_own:
            module.forward = inner
        else:
            del module.forward
    return undo


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
        self._neurons = {} if roles is None else {m: names[m] for m, _ in roles.neurons}
        self._neuron_ops = {} if roles is None else {names[m]: ops for m, ops in (*roles.neurons, *roles.integrators)}
        self._integrators = {} if roles is None else {m: names[m] for m, _ in roles.integrators}
        # spiking layers whose spikes a metered synaptic layer counts anyway: counted there once
        self._fed = {} if roles is None or not synapses else {n: s for n, s in roles.feeds}
        self.precision = ((network.weight_bits, network.activation_bits) if isinstance(network, QuantizedNetwork)
                          else (FLOAT_BITS, FLOAT_BITS))
        # what NeuroBench's activation sparsity reads: spiking layers, or an ANN's ReLUs
        self._relus = {} if roles is not None else {m: names[m] for m in network.modules() if isinstance(m, nn.ReLU)}
        self._layers = {m: LayerCount(names[m], role, fan_in(m)) for m, role in self._roles.items()}
        self.decisions = 0
        self._spikes: dict[str, torch.Tensor | float] = defaultdict(float)
        self._hooked_steps: dict[str, int] = defaultdict(int)      # updates of the layers not fed
        self.integrator_steps: dict[str, int] = defaultdict(int)   # non-spiking neuron layers
        self._active: dict[str, torch.Tensor | float] = defaultdict(float)   # ReLU outputs above 0
        self._relu_outputs: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> CostMeter:
        counters = [(self.network, self._count_decisions)]
        if self.synapses:
            counters += [(module, self._synapse_counter(self._layers[module])) for module in self._roles]
            counters += [(module, self._activation_counter(name)) for module, name in self._relus.items()]
        # a fed layer is counted by the synaptic layer it feeds
        counters += [(module, self._spike_counter(name)) for module, name in self._neurons.items() if module not in self._fed]
        if self.synapses:
            counters += [(module, self._step_counter(self.integrator_steps, name))
                         for module, name in self._integrators.items()]
        self._undo = [after_each_forward(module, counter) for module, counter in counters]
        return self

    def __exit__(self, *exc) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _count_decisions(self, module, inputs, output) -> None:
        self.decisions += inputs[0].shape[0]

    def _synapse_counter(self, layer: LayerCount):
        def hook(module, inputs, output) -> None:
            x = inputs[0].detach()
            batch = x.shape[0]
            layer.passes += batch
            layer.outputs += output.numel()
            layer.count(module, x, output.numel() // batch)
        return hook

    def _spike_counter(self, name: str):
        def hook(module, inputs, output) -> None:
            # summed in float32 (exact below 2^24 spikes per call), accumulated in float64
            self._spikes[name] = self._spikes[name] + output.detach().sum().double()
            self._hooked_steps[name] += output.numel()
        return hook

    @staticmethod
    def _step_counter(steps: dict[str, int], name: str):
        def hook(module, inputs, output) -> None:
            steps[name] += output.numel()
        return hook

    def _activation_counter(self, name: str):
        def hook(module, inputs, output) -> None:
            self._active[name] = self._active[name] + (output.detach() > 0).sum()
            self._relu_outputs[name] += output.numel()
        return hook

    @property
    def neuron_steps(self) -> dict[str, int]:
        """Updates of each spiking layer that ran, in the network's order (a layer that feeds a
        synaptic layer made as many as that layer read inputs)."""
        fed = {self._neurons[n]: self._layers[s].inputs for n, s in self._fed.items()}
        steps = {name: fed.get(name, self._hooked_steps.get(name, 0)) for name in self._neurons.values()}
        return {name: n for name, n in steps.items() if n}

    def _spike_totals(self) -> dict[str, float]:
        fed = {self._neurons[n]: self._layers[s].nonzero_inputs() for n, s in self._fed.items()
               if self._neurons[n] in self.neuron_steps}
        return {**{name: float(count) for name, count in self._spikes.items()}, **fed}

    def summary(self) -> dict:
        """The `neuro` block of eval.json: per-decision averages."""
        n = max(1, self.decisions)
        synops = sum(layer.operations(nonzero_weights=False) for layer in self._layers.values()
                     if layer.role == SPIKES) / n
        # dense MACs of the layers fed real values, a static one's counted once per decision
        macs = sum(layer.dense for layer in self._layers.values() if layer.role != SPIKES) / n
        block = {"timesteps": self.timesteps,
                 "macs_per_decision": macs,
                 "synops_per_decision": synops,
                 "decisions": self.decisions}
        spikes = self._spike_totals()
        if self.synapses:
            counts = self.counts(spikes)
            block.update({"counts": counts, "energy": all_estimates(counts), "energy_note": ENERGY_NOTE,
                          "neurobench": self.neurobench(spikes)})
        firing = self.firing(spikes)
        if firing:
            total = sum(self.neuron_steps.values())
            block.update({"firing_rate": firing["firing_rate"],
                          "mean_firing_rate": sum(spikes.values()) / total, **firing})
        return block

    def counts(self, spikes: dict[str, float]) -> dict:
        """What the energy models price (`compare.core.energy`), per decision."""
        n = max(1, self.decisions)
        synapses = [{"name": layer.name, "role": layer.role,
                     "input": "spikes" if layer.role == SPIKES else "binary" if layer.binary else "analog",
                     "dense": layer.dense / n, "accumulates": layer.operations(nonzero_weights=False) / n,
                     "nonzero_inputs": layer.nonzero_inputs() / n, "passes": layer.passes / n,
                     "input_size": layer.input_size, "output_size": layer.output_size,
                     "weights": module.weight.numel(), "bias": module.bias is not None}
                    for module, layer in self._layers.items()]
        neurons = [{"name": name, "updates": steps / n, "spikes": spikes.get(name, 0.0) / n,
                    **dataclasses.asdict(self._neuron_ops[name])}
                   for name, steps in (*self.neuron_steps.items(), *self.integrator_steps.items())]
        return {"timesteps": self.timesteps, "weight_bits": self.precision[0], "activation_bits": self.precision[1],
                "synapses": synapses, "neurons": neurons, "activations": sum(self._relu_outputs.values()) / n}

    def neurobench(self, spikes: dict[str, float]) -> dict:
        """The network's counts in NeuroBench's terms (docs/energy.md), per decision."""
        n = max(1, self.decisions)
        layers, macs, acs = {}, 0.0, 0.0
        for layer in self._layers.values():
            effective = layer.operations(nonzero_weights=True) / n
            kind = "ac" if layer.role == SPIKES or layer.binary else "mac"
            layers[layer.name] = {"role": layer.role, "kind": kind, "dense": layer.dense / n, "effective": effective}
            macs, acs = (macs + effective, acs) if kind == "mac" else (macs, acs + effective)
        if self._neurons:
            active, outputs = sum(spikes.values()), sum(self.neuron_steps.values())
        else:
            active, outputs = sum(float(v) for v in self._active.values()), sum(self._relu_outputs.values())
        weights = [m.weight for m in self._roles]
        return {"dense": sum(v["dense"] for v in layers.values()), "effective_macs": macs, "effective_acs": acs,
                "activation_sparsity": 1 - active / outputs if outputs else None,
                "membrane_updates": sum(self.neuron_steps.values()) / n,
                "footprint_bytes": sum(t.numel() * t.element_size()
                                       for t in (*self.network.parameters(), *self.network.buffers())),
                "connection_sparsity": (sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
                                        if weights else None),
                "layers": layers}

    def firing(self, spikes: dict[str, float] | None = None) -> dict:
        """Firing rates and liveness only ({} for a network without spiking layers)."""
        spikes = self._spike_totals() if spikes is None else spikes
        if not spikes:
            return {}
        rates = {name: spikes[name] / self.neuron_steps[name] for name in spikes}
        return {"firing_rate": rates, **liveness(rates)}
