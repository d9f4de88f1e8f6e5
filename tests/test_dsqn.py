import pytest
import torch
from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters, lif_box_feed_forward_step
from torch import nn

from compare.app.resolve import resolve_settings
from compare.core.accounting import CostMeter, synaptic_ops
from compare.core.errors import UsageError
from compare.core.networks import build_ann
from direct.dsqn import DSQNOptions, SpikingQNetwork, build_dsqn, decode
from direct.neurons import LeakyIntegratorLayer, LIFLayer, LIFParameters, li_step, lif_step


def trace(x):
    return torch.tensor(x, dtype=torch.float32)[:, None]  # (T, 1 neuron)


def test_lif_hard_reset_matches_hand_computed_trace():
    # v <- v + (x - v)/2: 0.75, 1.125 -> spike, reset to 0; 0.25; 1.625 -> spike, reset to 0
    spikes = LIFLayer(LIFParameters())(trace([1.5, 1.5, 0.5, 3.0]))
    assert spikes[:, 0].tolist() == [0, 1, 0, 1]
    v = torch.zeros(1)
    membranes = []
    for x in [1.5, 1.5, 0.5, 3.0]:
        _, v = lif_step(torch.tensor([x]), v, LIFParameters())
        membranes.append(v.item())
    assert membranes == pytest.approx([0.75, 0.0, 0.25, 0.0])


def test_lif_soft_reset_subtracts_the_threshold():
    p = LIFParameters(reset="soft")
    v, membranes, spikes = torch.zeros(1), [], []
    for x in [1.5, 1.5, 0.5, 3.0]:
        z, v = lif_step(torch.tensor([x]), v, p)
        spikes.append(z.item())
        membranes.append(v.item())
    assert spikes == [0, 1, 0, 1]
    assert membranes == pytest.approx([0.75, 0.125, 0.3125, 0.65625])


def test_lif_step_is_norses_lif_box_step():
    torch.manual_seed(0)
    x = torch.randn(20, 50) * 2
    ours = LIFParameters(surrogate="super", alpha=100.0, detach_reset=False)
    norse_p = LIFBoxParameters(tau_mem_inv=torch.tensor(0.5), v_leak=torch.tensor(0.0),
                               v_th=torch.tensor(1.0), v_reset=torch.tensor(0.0), method="super",
                               alpha=torch.tensor(100.0))
    v_ours = torch.zeros(50)
    state = LIFBoxFeedForwardState(v=torch.zeros(50))
    for t in range(20):
        z_ours, v_ours = lif_step(x[t], v_ours, ours)
        z_norse, state = lif_box_feed_forward_step(x[t], state, norse_p, dt=1.0)
        assert torch.equal(z_ours, z_norse)
        torch.testing.assert_close(v_ours, state.v)


def test_li_step_is_norses_li_box_step():
    from norse.torch.functional.leaky_integrator_box import LIBoxParameters, LIBoxState, li_box_feed_forward_step

    torch.manual_seed(0)
    x = torch.randn(10, 7)
    p = LIBoxParameters(tau_mem_inv=torch.tensor(0.5), v_leak=torch.tensor(0.0))
    ours, state = torch.zeros(7), LIBoxState(torch.zeros(7))
    for t in range(10):
        ours = li_step(x[t], ours, 2.0)
        _, state = li_box_feed_forward_step(x[t], state, p, dt=1.0)
        torch.testing.assert_close(ours, state.v)


def test_fused_integrator_equals_autograd_through_li_step():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 3, requires_grad=True)
    weights = torch.randn(6, 4, 3)
    fused = LeakyIntegratorLayer(3.0)(x)
    (fused * weights).sum().backward()
    fused_grad, x.grad = x.grad.clone(), None
    v, reference = torch.zeros(4, 3), []
    for t in range(6):
        v = li_step(x[t], v, 3.0)
        reference.append(v)
    reference = torch.stack(reference)
    (reference * weights).sum().backward()
    assert torch.equal(fused, reference)
    torch.testing.assert_close(fused_grad, x.grad)


def test_output_integrator_and_decoders_on_a_hand_computed_trace():
    # v <- v + (x - v)/2 over x = -4, 0, 2, 0: -2, -1, 0.5, 0.25
    v = LeakyIntegratorLayer(2.0)(trace([-4.0, 0.0, 2.0, 0.0]))
    assert v[:, 0].tolist() == pytest.approx([-2.0, -1.0, 0.5, 0.25])
    assert decode(v, "max").item() == pytest.approx(0.5)
    assert decode(v, "mean").item() == pytest.approx(-0.5625)
    assert decode(v, "last").item() == pytest.approx(0.25)
    assert decode(v, "max-abs").item() == pytest.approx(-2.0)


@pytest.mark.parametrize("family, shape", [("atari", (4, 84, 84)), ("minatar", (4, 10, 10)),
                                           ("classic", (4,))])
@pytest.mark.parametrize("options", [DSQNOptions(), DSQNOptions(readout="rate", timesteps=5, bias=True),
                                     DSQNOptions(reset="soft", decoder="max-abs", timesteps=3)])
def test_layer_by_layer_equals_step_by_step(family, shape, options):
    torch.manual_seed(1)
    net = build_dsqn(options, family, shape, n_actions=5)
    obs = (torch.rand(6, *shape) * 255).to(torch.uint8) if family == "atari" else torch.randn(6, *shape) * 3
    with torch.no_grad():
        assert torch.equal(net(obs), net.forward_stepwise(obs))


@pytest.mark.parametrize("family, shape", [("atari", (4, 84, 84)), ("classic", (4,))])
def test_gradient_reaches_the_first_layer(family, shape):
    torch.manual_seed(0)
    net = build_dsqn(DSQNOptions(), family, shape, n_actions=4)
    obs = (torch.rand(8, *shape) * 255).to(torch.uint8) if family == "atari" else torch.randn(8, *shape) * 3
    net(obs).sum().backward()
    assert net.synapses[0].weight.grad.abs().sum() > 0


def test_synaptic_operations_count_each_spikes_fan_out():
    conv = nn.Conv2d(1, 2, kernel_size=2, stride=1, bias=False)
    corner = torch.zeros(1, 1, 3, 3)
    corner[0, 0, 0, 0] = 1
    centre = torch.zeros(1, 1, 3, 3)
    centre[0, 0, 1, 1] = 1
    assert synaptic_ops(conv, corner) == 2       # one output position x 2 channels
    assert synaptic_ops(conv, centre) == 8       # four positions x 2 channels
    assert synaptic_ops(nn.Linear(3, 7), torch.tensor([[1.0, 0.0, 1.0]])) == 14


def test_cost_of_a_tiny_spiking_network_matches_hand_count():
    """Input 2.0 -> Linear(1->2) weights (4, 0) -> LIF -> Linear(2->3) -> integrator, T=3.
    Neuron 0 receives 8: v = 4 each step, spikes every step; neuron 1 never spikes."""
    options = DSQNOptions(timesteps=3, mlp_hidden=(2,))
    net = build_dsqn(options, "classic", (1,), n_actions=3)
    assert isinstance(net, SpikingQNetwork)
    with torch.no_grad():
        net.synapses[0].weight.copy_(torch.tensor([[4.0], [0.0]]))
    with CostMeter(net) as meter:
        net(torch.full((2, 1), 2.0))             # two decisions
    stats = meter.summary()
    assert stats["timesteps"] == 3 and meter.decisions == 2
    assert stats["macs_per_decision"] == 2        # the analog input layer, computed once
    assert stats["synops_per_decision"] == 9      # 3 spikes x fan-out 3
    assert stats["firing_rate"] == {"lifs.0": pytest.approx(0.5)}
    # the compute-only model: 4.6 pJ per float MAC, 0.9 pJ per accumulate (the input 2.0 is analog)
    assert stats["energy"]["compute"]["once"]["total_j"] == pytest.approx(2 * 4.6e-12 + 9 * 0.9e-12)


def test_ann_cost_is_its_macs():
    net = build_ann("atari", (4, 84, 84), 6)
    with CostMeter(net) as meter:
        net(torch.zeros(3, 4, 84, 84, dtype=torch.uint8))
    stats = meter.summary()
    nature_macs = (32 * 20 * 20 * 4 * 64 + 64 * 9 * 9 * 32 * 16 + 64 * 7 * 7 * 64 * 9 + 3136 * 512 + 512 * 6)
    assert stats["macs_per_decision"] == nature_macs
    assert stats["synops_per_decision"] == 0 and "firing_rate" not in stats and stats["timesteps"] == 1


@pytest.mark.parametrize("overrides, message", [
    ({"timesteps": "0"}, "timesteps=0 must be a positive integer"),
    ({"decoder": "median"}, "choose one of: max, mean, last, max-abs"),
    ({"surrogate": "sigmoid"}, "choose one of: atan, super"),
    ({"reset": "zero"}, "choose one of: hard, soft"),
])
def test_bad_dsqn_options_are_refused(overrides, message):
    with pytest.raises(UsageError, match=message):
        resolve_settings("dsqn", "CartPole-v1", 0, 100, "nature", None, overrides, "cpu")


def test_liu2022_preset_brings_its_network_and_its_hyperparameters():
    s = resolve_settings("dsqn", "Breakout", 0, 100, "nature", "liu2022", {}, "cpu")
    assert (s.options.timesteps, s.options.readout) == (64, "rate")
    assert (s.learner.lr, s.learner.loss) == (1e-4, "huber")
    default = resolve_settings("dsqn", "Breakout", 0, 100, "nature", None, {}, "cpu")
    assert default.preset == "chen2022" and default.options.timesteps == 8
    assert default.options.decoder == "max" and default.options.bias is False


@pytest.mark.parametrize("p", [
    LIFParameters(),
    LIFParameters(reset="soft"),
    LIFParameters(detach_reset=False),
    LIFParameters(reset="soft", detach_reset=False, surrogate="super", alpha=10.0),
    LIFParameters(tau_mem=3.0, v_th=0.5, v_reset=-0.2, surrogate="triangle", alpha=0.7),
])
def test_fused_lif_sequence_equals_autograd_through_lif_step(p):
    torch.manual_seed(0)
    x = (torch.randn(6, 3, 5) * 2).requires_grad_(True)
    weights = torch.randn(6, 3, 5)
    fused = LIFLayer(p)(x)
    (fused * weights).sum().backward()
    fused_grad, x.grad = x.grad.clone(), None
    v, reference = torch.zeros(3, 5), []
    for t in range(6):
        z, v = lif_step(x[t], v, p)
        reference.append(z)
    reference = torch.stack(reference)
    (reference * weights).sum().backward()
    assert torch.equal(fused, reference)
    assert fused.sum() > 0 and (fused == 0).any()
    torch.testing.assert_close(fused_grad, x.grad)


def test_static_input_gradient_sums_over_time():
    torch.manual_seed(0)
    x = (torch.randn(3, 5) * 2).requires_grad_(True)
    LIFLayer(LIFParameters())(x, timesteps=4).sum().backward()
    fused_grad, x.grad = x.grad.clone(), None
    v, total = torch.zeros(3, 5), 0
    for _ in range(4):
        z, v = lif_step(x, v, LIFParameters())
        total = total + z.sum()
    total.backward()
    torch.testing.assert_close(fused_grad, x.grad)


@pytest.mark.parametrize("family, obs_shape", [("classic", (4,)), ("minatar", (4, 10, 10))])
@pytest.mark.parametrize("reset, detach", [("hard", True), ("soft", True), ("hard", False)])
def test_norses_own_neurons_give_the_fused_q_values_and_gradients(family, obs_shape, reset, detach):
    torch.manual_seed(0)
    options = {"surrogate": "super", "surrogate_alpha": 100.0, "reset": reset, "detach_reset": detach,
               "bias": True, "mlp_hidden": (32, 32)}
    fused = build_dsqn(DSQNOptions(**options), family, obs_shape, 3)
    norse = build_dsqn(DSQNOptions(**options, neuron_impl="norse"), family, obs_shape, 3)
    with torch.no_grad():  # default init leaves the hidden layers nearly silent
        for parameter in fused.parameters():
            parameter.mul_(4)
    norse.load_state_dict(fused.state_dict())
    obs = torch.rand(8, *obs_shape) * 3
    q_fused, q_norse = fused(obs), norse(obs)
    assert q_fused.abs().sum() > 0 and not torch.equal(q_fused, q_fused[:1].expand_as(q_fused))
    torch.testing.assert_close(q_norse, q_fused)
    q_fused.square().sum().backward()
    q_norse.square().sum().backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), norse.named_parameters(), strict=True):
        assert a.grad is not None and a.grad.abs().sum() > 0, name
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_norse_neurons_with_the_atan_surrogate_are_refused():
    with pytest.raises(UsageError, match="Norse has no ATan surrogate"):
        DSQNOptions(neuron_impl="norse")


@pytest.mark.parametrize("method, family, shape, options", [
    ("dsqn", "minatar", (4, 10, 10), {"timesteps": 4}), ("dsqn", "classic", (4,), {"timesteps": 4}),
    ("dsqn", "classic", (4,), {"timesteps": 4, "reset": "soft", "detach_reset": False}),
    ("hybrid", "classic", (4,), {"timesteps": 3}), ("hybrid", "minatar", (4, 10, 10), {"timesteps": 3})])
def test_no_tensor_is_made_from_python_numbers_in_a_spiking_networks_forward_and_backward(method, family, shape,
                                                                                            options):
    """On a GPU each `torch.tensor(<number>, device=...)` is a host-to-device copy that stalls the
    queue: neuron parameters are Python floats or tensors made once, never a tensor per call."""
    from torch.profiler import ProfilerActivity, profile

    from compare.core.registry import get_method

    plugin = get_method(method)
    net = plugin.build_network(plugin.options_type(**options), family, shape, 3)
    x = (torch.rand(2, *shape) > 0.5).float()
    net(x)  # first-call set-up out of the way
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x).sum().backward()
    made = [e.key for e in prof.key_averages() if e.key in ("aten::lift_fresh", "aten::scalar_tensor")]
    assert not made, made
