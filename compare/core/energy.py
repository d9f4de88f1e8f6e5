"""Energy per decision from a network's recorded counts: three models, side by side.

`compare.core.accounting.CostMeter` records what a network did per decision (`neuro.counts`
in eval.json): every synaptic layer's operations, inputs and outputs, every neuron layer's
updates and spikes. A model prices those counts; nothing is re-run to change the model. Every
constant and its source is in this module.

Rules all three models share:
- A synaptic layer whose inputs are binary (spikes, or an observation in {0, 1} such as
  MinAtar's) does accumulates: one per non-zero input and synapse it drives, for every network,
  the ANN included. A layer fed other real values does dense multiply-accumulates (MACs): an
  ANN's hidden layers are charged every MAC, zeros included (no zero skipping).
- A spiking network's first layer fed the static observation (role `static`) is charged once
  per decision (`once`: its current is held for T steps) or at each of the T steps
  (`per_step`: how most SNN papers with direct encoding count it).
- Arithmetic at the network's precision: a float network at 32-bit float prices, a quantized
  ANN at integer prices for its weight and activation widths.

Models (`MODELS`):
- `compute`: the synaptic layers' arithmetic only, 45 nm (Horowitz 2014) — the SNN literature's
  usual estimate.
- `compute+neurons`: `compute` plus every neuron's state update at every step (each layer
  declares its update's adds and multiplies, `compare.core.spiking.NeuronOps`), bias adds, and
  an ANN's activation function (one comparison per output).
- `memory`: `compute+neurons` plus memory traffic, after Lemaire et al. 2022 (arXiv
  2210.13107): one SRAM access per weight an operation uses; for a layer fed spikes, one read and
  one write of the target's state per accumulate (an event-driven layer scatters into
  membranes; a frame layer accumulates in a register and writes each output once); each input
  value read and each output written once per pass; each neuron's state read and written, and
  its input read, at every update; each spike one 32-bit event (the neuron's address) written
  and read. An access costs the price of its buffer's size (`sram_access_pj`), each buffer sized
  from the network's own layers; a value narrower than 32 bits is packed (b/32 of an access).

Each estimate splits into the part that scales with the spikes (operations of layers fed
spikes, their state and weight traffic, spike events) and the rest: the crossover rate (the
firing rate below which a spiking network would cost less than another network) follows from
the two, assuming every layer's spikes scale by one common factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, pJ per operation.
FLOAT32_ADD_PJ = 0.9
FLOAT32_MULT_PJ = 3.7
INT8_ADD_PJ = 0.03
INT32_ADD_PJ = 0.1
INT8_MULT_PJ = 0.2
FLOAT32_MAC_PJ = FLOAT32_MULT_PJ + FLOAT32_ADD_PJ  # 4.6

# Lemaire et al. 2022 (arXiv 2210.13107), SRAM access energy per 32-bit word by buffer size.
SRAM_TIERS_PJ = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
WORD_BITS = 32
FLOAT_BITS = 32

MODELS = {
    "compute": "45 nm compute only (Horowitz 2014): synaptic operations",
    "compute+neurons": "45 nm compute (Horowitz 2014): synaptic operations, neuron updates, bias adds, activations",
    "memory": "45 nm compute + SRAM traffic (Horowitz 2014; Lemaire et al. 2022): weights, states, activations, spikes",
}
CONVENTIONS = ("once", "per_step")


def sram_access_pj(buffer_bytes: float) -> float:
    """One 32-bit access to an SRAM of `buffer_bytes`: Lemaire et al.'s 8 KB / 32 KB / 1 MB
    prices; a buffer over 1 MB is priced as 1 MB (an underestimate: such a buffer is larger, or
    off-chip)."""
    for size, price in SRAM_TIERS_PJ:
        if buffer_bytes <= size:
            return price
    return SRAM_TIERS_PJ[-1][1]


def value_access_pj(buffer_values: float, bits: int) -> float:
    """Reading or writing one `bits`-wide value of a buffer of `buffer_values` such values,
    packed (b/32 of a 32-bit access)."""
    return sram_access_pj(buffer_values * bits / 8) * bits / WORD_BITS


def int_add_pj(bits: int) -> float:
    """An integer add: Horowitz's 8-bit price up to 8 bits, his 32-bit price above."""
    return INT8_ADD_PJ if bits <= 8 else INT32_ADD_PJ


def int_mult_pj(a_bits: int, b_bits: int) -> float:
    """An a x b-bit integer multiply, scaled from Horowitz's 8 x 8-bit 0.2 pJ by the product of
    the widths (an array multiplier; his 32-bit multiply, 3.1 pJ, is 15.5x his 8-bit one)."""
    return INT8_MULT_PJ * a_bits * b_bits / 64


@dataclass(frozen=True)
class Precision:
    weight_bits: int = FLOAT_BITS
    activation_bits: int = FLOAT_BITS

    @property
    def is_float(self) -> bool:
        return self.weight_bits == FLOAT_BITS and self.activation_bits == FLOAT_BITS

    def mac_pj(self) -> float:
        # integer MACs accumulate in 32 bits
        return FLOAT32_MAC_PJ if self.is_float else int_mult_pj(self.weight_bits, self.activation_bits) + INT32_ADD_PJ

    def accumulate_pj(self) -> float:
        return FLOAT32_ADD_PJ if self.is_float else INT32_ADD_PJ

    def compare_pj(self) -> float:
        return FLOAT32_ADD_PJ if self.is_float else int_add_pj(self.activation_bits)


@dataclass
class Estimate:
    """Joules per decision: `fixed` (does not scale with spikes) + `spiking` (does)."""
    fixed: float = 0.0
    spiking: float = 0.0

    @property
    def total(self) -> float:
        return self.fixed + self.spiking

    def to_dict(self) -> dict:
        return {"total_j": self.total, "fixed_j": self.fixed, "spiking_j": self.spiking}


SYNAPSE_FIELDS = ("dense", "accumulates", "nonzero_inputs", "passes", "input_size", "output_size", "weights")
NEURON_FIELDS = ("updates", "spikes", "adds", "mults", "state_words")


def counts_problem(counts) -> str | None:
    """Why a recorded `neuro.counts` cannot be priced (wrong or missing types), or None."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    if not isinstance(counts, dict):
        return "neuro.counts is not an object"
    if not all(isinstance(counts.get(k), int) and counts[k] >= 1 for k in ("timesteps", "weight_bits", "activation_bits")):
        return "neuro.counts lacks a positive integer timesteps, weight_bits or activation_bits"
    synapses, neurons = counts.get("synapses"), counts.get("neurons")
    if not (isinstance(synapses, list) and all(
            isinstance(layer, dict) and layer.get("role") in ("static", "analog", "spikes")
            and layer.get("input") in ("analog", "binary", "spikes") and all(number(layer.get(k)) for k in SYNAPSE_FIELDS)
            for layer in synapses)):
        return "neuro.counts.synapses is not a list of layers with a role, an input kind and numeric counts"
    if not (isinstance(neurons, list) and all(isinstance(layer, dict) and all(number(layer.get(k)) for k in NEURON_FIELDS)
                                              for layer in neurons)):
        return "neuro.counts.neurons is not a list of layers with numeric counts"
    if not number(counts.get("activations")):
        return "neuro.counts.activations is not a number"
    return None


def estimate(counts: dict, model: str, convention: str) -> Estimate:
    """Energy per decision of the network whose `counts` (CostMeter) are given."""
    if model not in MODELS:
        raise ValueError(f"unknown energy model {model!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown first-layer convention {convention!r}")
    precision = Precision(counts["weight_bits"], counts["activation_bits"])
    neurons, memory = model != "compute", model == "memory"
    T = counts["timesteps"]
    pj = Estimate()
    for layer in counts["synapses"]:
        repeat = T if convention == "per_step" and layer["role"] == "static" else 1
        ops = layer["accumulates"] if layer["input"] != "analog" else layer["dense"]
        outputs = layer["output_size"] * layer["passes"]
        if layer["role"] == "spikes":  # event-driven: every accumulate scatters into a state
            e = ops * FLOAT32_ADD_PJ
            if memory:
                state = value_access_pj(layer["output_size"], WORD_BITS)
                e += ops * (value_access_pj(layer["weights"], WORD_BITS) + 2 * state)
                e += layer["nonzero_inputs"] * value_access_pj(layer["input_size"], WORD_BITS)  # spike events
            pj.spiking += e
            if neurons and layer["bias"]:
                pj.fixed += outputs * FLOAT32_ADD_PJ
            continue
        in_bits = 1 if layer["input"] == "binary" else precision.activation_bits
        out_bits = precision.activation_bits
        e = ops * (precision.mac_pj() if layer["input"] == "analog" else precision.accumulate_pj())
        if neurons and layer["bias"]:
            e += outputs * precision.accumulate_pj()
        if memory:
            e += ops * value_access_pj(layer["weights"], precision.weight_bits)
            e += layer["input_size"] * layer["passes"] * value_access_pj(layer["input_size"], in_bits)
            e += outputs * value_access_pj(layer["output_size"], out_bits)
        pj.fixed += e * repeat
    if neurons:
        pj.fixed += counts["activations"] * precision.compare_pj()
        for layer in counts["neurons"]:
            updates = layer["updates"]
            pj.fixed += updates * (layer["adds"] * FLOAT32_ADD_PJ + layer["mults"] * FLOAT32_MULT_PJ)
            if memory:
                size = updates / T
                pj.fixed += updates * (2 * layer["state_words"] + 1) * value_access_pj(size * (layer["state_words"] + 1),
                                                                                       WORD_BITS)
                pj.spiking += layer["spikes"] * value_access_pj(size, WORD_BITS)
    return Estimate(pj.fixed * 1e-12, pj.spiking * 1e-12)


def all_estimates(counts: dict) -> dict:
    """Every model under both first-layer conventions: eval.json's `neuro.energy`."""
    return {model: {convention: estimate(counts, model, convention).to_dict() for convention in CONVENTIONS}
            for model in MODELS}


def crossover_rate(snn: Estimate, rate: float, other_joules: float) -> float | None:
    """The mean firing rate at which the spiking network's energy would equal `other_joules`,
    its spike-driven part scaled with the rate from its measured `rate`; None when its part
    that does not scale with spikes alone costs more (no rate would do), or it did not fire."""
    if snn.fixed >= other_joules or snn.spiking <= 0 or rate <= 0:
        return None
    return rate * (other_joules - snn.fixed) / snn.spiking
