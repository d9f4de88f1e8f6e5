"""The energy models (compare.core.energy) on networks small enough to count by hand.

Prices (pJ): float MAC 4.6, float add 0.9, float multiply 3.7; int8 x int8 multiply 0.2, int32
add 0.1, int8 add 0.03; every buffer here is under 8 KB: 10 pJ per 32-bit access.
"""

import pytest
import torch
from torch import nn

from compare.core.accounting import CostMeter, QuantizedNetwork
from compare.core.energy import Estimate, crossover_rate, estimate, sram_access_pj
from direct.dsqn import DSQNOptions, build_dsqn

ANALOG, BINARY = (0.5, 2.0), (1.0, 0.0)


def tiny_snn():
    """Linear(2->2, W = [[3, 0], [0, 0]], static) -> LIF (tau 2, threshold 1) -> Linear(2->1) ->
    leaky integrator, T = 2, no biases. Analog input (0.5, 2): neuron 0's current 1.5, v = 0.75
    then 1.125: one spike. Binary input (1, 0): current 3, a spike at both steps."""
    net = build_dsqn(DSQNOptions(timesteps=2, mlp_hidden=(2,), init="default"), "classic", (2,), n_actions=1)
    with torch.no_grad():
        net.synapses[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.0]]))
    return net


def counts_of(net, x):
    with CostMeter(net) as meter, torch.no_grad():
        net(torch.tensor([x]))
    return meter.summary()


@pytest.mark.parametrize("x, spikes, first_ops", [(ANALOG, 1, 4), (BINARY, 2, 2)])
def test_the_tiny_snn_s_counts(x, spikes, first_ops):
    counts = counts_of(tiny_snn(), x)["counts"]
    first, second = counts["synapses"]
    assert (first["role"], first["input"]) == ("static", "analog" if x == ANALOG else "binary")
    assert first["dense"] == 4 and first["passes"] == 1 and first["weights"] == 4 and not first["bias"]
    # accumulates: each non-zero input x its 2 synapses
    assert first["accumulates"] == first_ops and first["nonzero_inputs"] == (2 if x == ANALOG else 1)
    assert (second["role"], second["dense"], second["passes"]) == ("spikes", 4, 2)
    assert second["accumulates"] == spikes and second["nonzero_inputs"] == spikes
    lif, integrator = counts["neurons"]
    assert (lif["updates"], lif["spikes"], lif["adds"], lif["mults"]) == (4, spikes, 3, 1)
    assert (integrator["updates"], integrator["spikes"], integrator["adds"], integrator["mults"]) == (2, 0, 2, 1)


# (input, model, convention) -> (fixed, spiking) pJ, counted by hand:
#   analog: first layer 4 MACs, 1 spike, 1 accumulate in the second layer;
#   binary: first layer 2 accumulates (1 non-zero input x 2 synapses), 2 spikes, 2 accumulates.
#   LIF update 3 adds + 1 multiply = 6.4; integrator 2 adds + 1 multiply = 5.5.
#   memory: frame layer = ops x (op + 10 weight) + inputs x 10 x bits/32 + outputs x 10;
#   layer fed spikes = accumulates x (0.9 + 10 weight + 2 x 10 state) + spikes x 10;
#   neurons = updates x (op + 3 x 10) + spikes x 10.
SNN_CASES = [
    (ANALOG, "compute", "once", 4 * 4.6, 0.9),
    (ANALOG, "compute", "per_step", 2 * 4 * 4.6, 0.9),
    (ANALOG, "compute+neurons", "once", 4 * 4.6 + 4 * 6.4 + 2 * 5.5, 0.9),
    (ANALOG, "memory", "once", 4 * 14.6 + 20 + 20 + 4 * 36.4 + 2 * 35.5, 30.9 + 10 + 10),
    (ANALOG, "memory", "per_step", 2 * (4 * 14.6 + 20 + 20) + 4 * 36.4 + 2 * 35.5, 30.9 + 10 + 10),
    (BINARY, "compute", "once", 2 * 0.9, 2 * 0.9),
    (BINARY, "compute", "per_step", 2 * 2 * 0.9, 2 * 0.9),
    (BINARY, "compute+neurons", "once", 2 * 0.9 + 4 * 6.4 + 2 * 5.5, 2 * 0.9),
    (BINARY, "memory", "once", 2 * 10.9 + 2 * 10 / 32 + 20 + 4 * 36.4 + 2 * 35.5, 2 * 30.9 + 2 * 10 + 2 * 10),
]


@pytest.mark.parametrize("x, model, convention, fixed, spiking", SNN_CASES)
def test_the_tiny_snn_s_energy_under_each_model(x, model, convention, fixed, spiking):
    summary = counts_of(tiny_snn(), x)
    e = estimate(summary["counts"], model, convention)
    assert e.fixed == pytest.approx(fixed * 1e-12) and e.spiking == pytest.approx(spiking * 1e-12)
    assert summary["energy"][model][convention]["total_j"] == pytest.approx((fixed + spiking) * 1e-12)


class TinyANN(nn.Module):
    """Linear(2->2, W = [[3, 0], [0, 0]], b = [0, -1]) -> ReLU -> Linear(2->1, W = [1, 1], b = 0)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        with torch.no_grad():
            self.net[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.0]]))
            self.net[0].bias.copy_(torch.tensor([0.0, -1.0]))
            self.net[2].weight.fill_(1.0)
            self.net[2].bias.zero_()

    def forward(self, x):
        return self.net(x)


class TinyInt8(TinyANN, QuantizedNetwork):
    weight_bits, activation_bits = 8, 8


# The ReLU's output (1.5 or 3, and 0) is analog: the second layer does 2 MACs either way.
# float: MAC 4.6, accumulate 0.9, comparison 0.9; int8: MAC 0.2 + 0.1, accumulate 0.1, comparison 0.03,
# an 8-bit value read or written is 10 x 8/32 = 2.5 pJ.
ANN_CASES = [
    (TinyANN, ANALOG, "compute", 6 * 4.6),
    (TinyANN, ANALOG, "compute+neurons", 6 * 4.6 + 3 * 0.9 + 2 * 0.9),
    (TinyANN, ANALOG, "memory", 6 * 4.6 + 3 * 0.9 + 2 * 0.9 + 6 * 10 + (2 + 2) * 10 + (2 + 1) * 10),
    (TinyANN, BINARY, "compute", 2 * 0.9 + 2 * 4.6),
    (TinyANN, BINARY, "memory", 2 * 0.9 + 2 * 4.6 + 3 * 0.9 + 2 * 0.9 + 4 * 10 + 2 * 10 / 32 + 2 * 10 + 3 * 10),
    (TinyInt8, BINARY, "compute", 2 * 0.1 + 2 * 0.3),
    (TinyInt8, BINARY, "compute+neurons", 2 * 0.1 + 2 * 0.3 + 3 * 0.1 + 2 * 0.03),
    (TinyInt8, BINARY, "memory", 2 * 0.1 + 2 * 0.3 + 3 * 0.1 + 2 * 0.03 + 4 * 2.5 + 2 * 10 / 32 + 2 * 2.5 + 3 * 2.5),
]


@pytest.mark.parametrize("network, x, model, joules_pj", ANN_CASES)
def test_an_ann_s_energy_under_each_model(network, x, model, joules_pj):
    counts = counts_of(network(), x)["counts"]
    assert counts["timesteps"] == 1 and counts["neurons"] == [] and counts["activations"] == 2
    for convention in ("once", "per_step"):  # an ANN has no time steps: the conventions agree
        e = estimate(counts, model, convention)
        assert e.spiking == 0 and e.fixed == pytest.approx(joules_pj * 1e-12)


def test_sram_prices_follow_the_buffer_size():
    assert [sram_access_pj(b) for b in (100, 8192, 8193, 32 * 1024, 40_000, 2**20, 2**24)] == \
        [10.0, 10.0, 20.0, 20.0, 100.0, 100.0, 100.0]


def test_the_crossover_rate_scales_the_spike_driven_part():
    # fixed 1 pJ, 2 pJ from spikes at rate 0.1: equal to a 2 pJ network at rate 0.05
    assert crossover_rate(Estimate(1.0, 2.0), 0.1, 2.0) == pytest.approx(0.05)
    assert crossover_rate(Estimate(3.0, 2.0), 0.1, 2.0) is None  # no rate would do
    assert crossover_rate(Estimate(1.0, 2.0), 0.1, 4.0) == pytest.approx(0.15)  # above its own rate


def test_unknown_models_and_conventions_are_refused():
    counts = counts_of(TinyANN(), ANALOG)["counts"]
    with pytest.raises(ValueError, match="unknown energy model"):
        estimate(counts, "watts", "once")
    with pytest.raises(ValueError, match="unknown first-layer convention"):
        estimate(counts, "memory", "twice")
