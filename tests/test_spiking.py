"""The spiking-network declaration (compare.core.spiking) and the cost counts that read it."""

import types

import pytest
import torch
import torch.nn.functional as F
from conftest import throwaway_install
from torch import nn

from compare.core import accounting
from compare.core.accounting import CostMeter, fan_out_map, synaptic_ops
from compare.core.networks import build_ann
from compare.core.spiking import ANALOG, SPIKES, STATIC, CostRoles, SpikingNetwork
from converters.convert import ConvertedSNN, ConvertOptions
from converters.hardware import ChipSNN, chip_layers, spiking_layers
from direct.dsqn import DSQNOptions, build_dsqn
from direct.hybrid import HybridOptions, SpikingActor
from direct.neurons import LIFLayer


def roles(network) -> list[str]:
    return [role for _, role in network.cost_roles().synapses]


@pytest.mark.parametrize("family, shape, options, expected", [
    ("atari", (4, 84, 84), DSQNOptions(), [STATIC] + [SPIKES] * 4),
    ("minatar", (4, 10, 10), DSQNOptions(), [STATIC, SPIKES, SPIKES]),
    # liu2022's readout: the last layer reads mean spike rates, real values
    ("atari", (4, 84, 84), DSQNOptions(readout="rate"), [STATIC, SPIKES, SPIKES, SPIKES, ANALOG]),
])
def test_the_dsqn_declares_its_roles_and_t_from_its_structure(family, shape, options, expected):
    net = build_dsqn(options, family, shape, 4)
    declared = net.cost_roles()
    assert roles(net) == expected and declared.timesteps == options.timesteps
    assert [m for m, _ in declared.synapses] == list(net.synapses)
    assert [m for m, _ in declared.neurons] == list(net.lifs)
    assert net.input_divisor == (options.input_divisor if family == "atari" else None)


def test_the_hybrid_actor_declares_its_encoder_and_its_spiking_output():
    vector = SpikingActor(HybridOptions(), "classic", (4,), 2)
    assert roles(vector) == [SPIKES] * 3  # the encoder's spikes drive the first layer
    assert [m for m, _ in vector.cost_roles().neurons] == [vector.encoder, *vector.lifs] and len(vector.lifs) == 3
    pixels = SpikingActor(HybridOptions(decoder="membrane"), "atari", (4, 84, 84), 4)
    assert roles(pixels) == [STATIC] + [SPIKES] * 4 and len(pixels.lifs) == 4 and pixels.output is not None


def test_the_converted_network_and_the_chip_model_declare_their_inputs():
    ann = build_ann("minatar", (4, 10, 10), 3)
    converted = ConvertedSNN(ann.net, ConvertOptions(), 8, None, 1.0)
    assert roles(converted) == [STATIC, SPIKES, SPIKES] and converted.cost_roles().timesteps == 8
    chip_ann = build_ann("atari", (4, 84, 84), 4, arch="speck")
    chip = ChipSNN(spiking_layers(chip_layers(chip_ann.net, (4, 84, 84)), 4), 4, 255.0, 1.0)
    assert roles(chip) == [SPIKES] * 5  # the host rate-codes the frame: spikes at the first core too
    assert len(chip.cost_roles().neurons) == 5


def test_a_network_that_leaves_a_synaptic_layer_out_of_its_declaration_is_refused():
    class Forgetful(SpikingNetwork):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def cost_roles(self):
            return CostRoles(4, ((self.a, STATIC),), ())

    with pytest.raises(TypeError, match="leaves out 1 synaptic layer"):
        CostMeter(Forgetful())


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.Conv2d(2, 4, 4, stride=3),
                                  nn.Conv2d(2, 2, 3, dilation=2, padding=2), nn.Conv2d(4, 6, 3, groups=2)])
def test_the_fan_out_map_counts_what_the_layer_s_connectivity_drives(conv):
    """The map built once per shape gives, for any spikes, what running the connectivity (a
    convolution with a ones kernel) on them counts, borders, strides and groups included."""
    torch.manual_seed(0)
    spikes = (torch.rand(6, conv.in_channels, 11, 11) > 0.7).float()
    driven = F.conv2d(spikes, torch.ones_like(conv.weight), None, conv.stride, conv.padding, conv.dilation,
                      conv.groups).sum().item()
    assert synaptic_ops(conv, spikes) == driven
    assert fan_out_map(conv, spikes.shape[1:]).shape == spikes.shape[1:]


@pytest.mark.parametrize("rows_per_fold", [2**16, 3])
def test_counts_are_added_per_call_and_folding_them_changes_nothing(monkeypatch, rows_per_fold):
    """Each metered call adds its inputs' counts in place, into ordinary tensors under inference
    mode (no input is kept, so the caller may rewrite its buffer), the first layer's as binary
    inputs until one is not; float32 running sums folded into float64 every `rows_per_fold`
    rows give what one count over every input gives."""
    monkeypatch.setattr(accounting, "ROWS_PER_FOLD", rows_per_fold)
    torch.manual_seed(0)
    net = build_dsqn(DSQNOptions(timesteps=4, weight_gain=8.0), "minatar", (4, 10, 10), 3)
    frames, seen, inputs_of_second = torch.zeros(2, 4, 10, 10), [], []
    hook = net.synapses[1].register_forward_hook(lambda m, i, o: inputs_of_second.append(i[0].clone()))
    with CostMeter(net) as meter, torch.inference_mode():
        for decision in range(5):
            values = (torch.rand(2, 4, 10, 10) > 0.5).float() * (0.5 if decision == 4 else 1.0)
            frames.copy_(values)  # one buffer, rewritten per decision
            seen.append(values)
            net(frames)
            if decision == 3:
                assert meter._layers[net.synapses[0]].binary
    hook.remove()
    first, second = meter._layers[net.synapses[0]], meter._layers[net.synapses[1]]
    assert not first.binary
    counts = [entry.fold() for layer in meter._layers.values() for entry in layer.counts.values()]
    assert not any(c.is_inference() for c in counts)
    assert torch.equal(first.counts[(4, 10, 10)].fold(), torch.cat(seen).bool().sum(dim=0).view(-1).double())
    spikes = torch.cat(inputs_of_second).flatten(1).sum(dim=0).double()
    assert torch.equal(second.counts[inputs_of_second[0].shape[1:]].fold(), spikes)
    summary = meter.summary()
    assert meter.decisions == 10 and summary["synops_per_decision"] > 0
    assert set(summary["firing_rate"]) == {"lifs.0", "lifs.1"}


def test_a_meter_leaves_the_network_as_it_found_it_and_nested_meters_count_alike():
    """The meter wraps each counted module's forward while it is attached (a hook would put the
    module on torch's slower call path): afterwards no module keeps a wrapper, a hook of someone
    else's still sees every call, and a meter inside another counts what it counts alone."""
    torch.manual_seed(0)
    net = build_dsqn(DSQNOptions(timesteps=4, weight_gain=8.0), "minatar", (4, 10, 10), 3)
    frames = (torch.rand(3, 4, 10, 10) > 0.7).float()
    calls = []
    hook = net.synapses[1].register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with CostMeter(net) as alone, torch.inference_mode():
        net(frames)
    with CostMeter(net) as outer, torch.inference_mode():
        with CostMeter(net) as inner:
            net(frames)
    hook.remove()
    assert all("forward" not in module.__dict__ for module in net.modules())
    assert len(calls) == 2
    assert outer.summary() == inner.summary() == alone.summary()


@pytest.mark.parametrize("values, binary, nonzero", [
    ([1.0, -1.0, 0.0, -0.0], True, 2), ([1.0, 0.5, 0.0, 0.0], False, 2), ([float("inf"), 1.0, 0.0, 0.0], False, 2),
    ([float("nan"), 1.0, 0.0, 0.0], False, 1), ([1.0 + 2**-23, 0.0, 0.0, 0.0], False, 1)])
def test_a_static_input_is_binary_only_when_every_value_is_minus_one_zero_or_one(values, binary, nonzero):
    """A static layer's input is binary (its operations accumulates) only when every value is
    -1, 0 or 1 (an infinity or a value one rounding step from 1 is not); its non-zero count
    leaves NaN out."""
    layer = nn.Linear(4, 2)
    count = accounting.LayerCount("first", STATIC, 4)
    count.count(layer, torch.tensor([values]), 2)
    assert count.binary == binary
    assert count.nonzero_inputs() == nonzero


def tiny_dsqn(first_weights, output_weights):
    """Input (2) -> Linear(2->2) -> LIF -> Linear(2->3) -> integrator, T = 3, no biases."""
    net = build_dsqn(DSQNOptions(timesteps=3, mlp_hidden=(2,)), "classic", (2,), n_actions=3)
    with torch.no_grad():
        net.synapses[0].weight.copy_(torch.tensor(first_weights))
        net.synapses[1].weight.copy_(torch.tensor(output_weights))
    return net


@pytest.mark.parametrize("obs, first_kind", [(2.0, "mac"), (1.0, "ac")])
def test_neurobench_counts_of_a_tiny_network_match_a_hand_count(obs, first_kind):
    """Weights [[4, 0], [0, 1]]: input (obs, 0) gives currents (4 obs, 0); neuron 0 spikes at
    each of the 3 steps (v = 2 obs >= 1), neuron 1 never. Output weights: column 0 (1, 0, 2),
    one zero. An analog input (2.0) makes the first layer's operations MACs, a binary one (1.0,
    as MinAtar's frames) ACs, as NeuroBench classifies them."""
    net = tiny_dsqn([[4.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0], [2.0, 1.0]])
    with CostMeter(net) as meter, torch.no_grad():
        net(torch.tensor([[obs, 0.0]]))
    counts = meter.summary()["neurobench"]
    first, output = counts["layers"]["synapses.0"], counts["layers"]["synapses.1"]
    # dense: every input x every synapse: 2 x 2 once (static), then 2 x 3 at each of 3 steps
    assert first == {"role": STATIC, "kind": first_kind, "dense": 4, "effective": 1}  # x0 x its one non-zero weight
    assert output == {"role": SPIKES, "kind": "ac", "dense": 18, "effective": 6}  # 3 spikes x 2 non-zero weights
    assert counts["dense"] == 22
    assert (counts["effective_macs"], counts["effective_acs"]) == ((1, 6) if first_kind == "mac" else (0, 7))
    assert counts["activation_sparsity"] == 0.5  # 3 spikes of 6 neuron-steps
    assert counts["membrane_updates"] == 6       # 2 neurons x 3 steps
    assert counts["footprint_bytes"] == (4 + 6) * 4
    assert counts["connection_sparsity"] == pytest.approx(3 / 10)
    assert meter.summary()["synops_per_decision"] == 9  # the energy's count: 3 spikes x all 3 synapses


def test_neurobench_counts_of_an_ann_read_its_relus():
    net = build_ann("classic", (2,), 3, (2,))
    with torch.no_grad():
        net.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        net.net[0].bias.zero_()
    with CostMeter(net) as meter, torch.no_grad():
        net(torch.tensor([[2.0, 3.0]]))
    counts = meter.summary()["neurobench"]
    # layer 0: both inputs non-zero, 2 non-zero weights (column 0); ReLU: (2, 0); layer 1 reads one non-zero input
    assert counts["layers"]["net.0"]["effective"] == 2 and counts["layers"]["net.2"]["effective"] == 3
    assert counts["effective_macs"] == 5 and counts["effective_acs"] == 0 and counts["dense"] == 4 + 6
    assert counts["activation_sparsity"] == 0.5 and counts["membrane_updates"] == 0


NEUROBENCH = "2.3.0"  # the newest release on the package index when this test was written
SNNTORCH = "0.9.4"  # neurobench 2.3.0 requires snntorch >= 0.7.0 (its hooks import it); 0.9.4 meets that


@pytest.mark.slow
def test_neurobench_counts_the_same_operations_on_a_minatar_dsqn_and_its_ann(tmp_path, monkeypatch):
    """NeuroBench's own per-layer count (`single_layer_MACs`, what its SynapticOperations sums),
    installed on its own in a throwaway folder, on the very inputs each synaptic layer saw:
    effective and dense operations, and whether they are accumulates, equal ours; and its
    ActivationSparsity, read through its own hooks on the layers it would be told are the
    activation modules (`add_activation_module`: the LIF layers; an ANN's ReLUs), equals ours."""
    # its hooks import snntorch (for its neuron classes), installed beside it
    target = throwaway_install(tmp_path / "neurobench", f"neurobench {NEUROBENCH}", f"neurobench=={NEUROBENCH}",
                               f"snntorch=={SNNTORCH}")
    monkeypatch.syspath_prepend(str(target))
    from neurobench.hooks.neuron import NeuronHook
    from neurobench.metrics.utils.layers import single_layer_MACs
    from neurobench.metrics.workload import ActivationSparsity

    torch.manual_seed(0)
    obs = (torch.rand(8, 4, 10, 10) > 0.8).float()  # binary frames, as MinAtar's
    for net in (build_dsqn(DSQNOptions(weight_gain=8.0), "minatar", (4, 10, 10), 3),
                build_ann("minatar", (4, 10, 10), 3)):
        seen: dict[nn.Module, list[torch.Tensor]] = {}

        def record(module, args, seen=seen):
            seen.setdefault(module, []).append(args[0].detach().clone())

        hooks = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        activations = [m for m in net.modules() if isinstance(m, (LIFLayer, nn.ReLU))]
        theirs = types.SimpleNamespace(activation_hooks=[NeuronHook(m) for m in activations])
        with CostMeter(net) as meter, torch.no_grad():
            net(obs)
        for hook in hooks:
            hook.remove()
        for hook in theirs.activation_hooks:
            hook.close()
        assert meter.summary()["neurobench"]["activation_sparsity"] == pytest.approx(
            ActivationSparsity()(theirs, None, None), abs=1e-12)
        names = dict((m, n) for n, m in net.named_modules())
        ours = meter.summary()["neurobench"]["layers"]
        assert set(ours) == {names[m] for m in seen}
        for module, inputs in seen.items():
            effective = sum(single_layer_MACs(x, module)[0] for x in inputs)
            dense = sum(single_layer_MACs(x, module, total=True)[0] for x in inputs)
            spiking = all(single_layer_MACs(x, module)[1] for x in inputs)
            layer = ours[names[module]]
            assert (layer["effective"] * len(obs), layer["dense"] * len(obs)) == (effective, dense), names[module]
            assert (layer["kind"] == "ac") == spiking, names[module]


@pytest.mark.parametrize("make, obs", [
    (lambda: build_dsqn(DSQNOptions(weight_gain=8.0), "minatar", (4, 10, 10), 3), (torch.rand(6, 4, 10, 10) > 0.8).float()),
    (lambda: build_dsqn(DSQNOptions(readout="rate", weight_gain=8.0), "minatar", (4, 10, 10), 3),
     (torch.rand(6, 4, 10, 10) > 0.8).float()),
    (lambda: SpikingActor(HybridOptions(), "classic", (4,), 2), torch.randn(6, 4)),
    (lambda: ConvertedSNN(build_ann("minatar", (4, 10, 10), 3).net, ConvertOptions(readout="rate"), 8, None, 1.0),
     (torch.rand(6, 4, 10, 10) > 0.5).float()),
])
def test_spikes_counted_at_the_layer_they_feed_give_the_neuron_layer_s_own_count(make, obs):
    """A spiking layer that feeds a synaptic layer (`CostRoles.feeds`) has its spikes counted
    there once; the firing rates equal those its own hook counts (the firing-only meter)."""
    torch.manual_seed(0)
    net = make().eval()
    assert net.cost_roles().feeds
    rates = []
    for synapses in (True, False):
        with CostMeter(net, synapses=synapses) as meter, torch.no_grad():
            net(obs)
        rates.append(meter.firing()["firing_rate"])
    assert rates[0] == rates[1] and any(r > 0 for r in rates[0].values()), rates
