"""The quantized-ANN baseline (converters/quantize.py): the grid it rounds to, a run made from a
short DQN run, and what it refuses."""

import json

import pytest
import torch
from conftest import assert_clean_error, compare, compare_run, snapshot
from torch import nn

from compare.core.accounting import CostMeter
from converters.quantize import (
    Grid,
    QuantizedQNetwork,
    QuantizeOptions,
    bias_shifts,
    input_grid,
    layer_inputs,
    quantized_network,
    quantized_weight,
)

SHORT = ["--game", "CartPole-v1", "--steps", "1500", "--set", "eval_episodes=3", "--set", "mlp_hidden=16,16",
         "--set", "learning_starts=500"]


def test_weights_are_rounded_per_output_channel_to_their_width():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3)
    for bits in (2, 4, 8):
        q = quantized_weight(weight, bits)
        high = 2 ** (bits - 1) - 1
        for channel, original in zip(q, weight):
            scale = original.abs().max() / high
            steps = channel / scale
            assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= high + 1e-4
            assert (channel - original).abs().max() <= scale / 2 + 1e-6


def test_inputs_are_unsigned_after_a_relu_signed_otherwise_and_binary_ones_exact():
    assert input_grid(torch.tensor([0.0, 1.0, 1.0]), 4, 100) is None
    assert input_grid(torch.tensor([0.0, 0.5, 3.0]), 4, 100) == Grid(3.0 / 15, 0, 15)
    assert input_grid(torch.tensor([-2.0, 0.5, 1.0]), 4, 100) == Grid(2.0 / 7, -7, 7)


def test_the_quantized_network_computes_on_the_grid_and_declares_its_widths():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(64, 3)
    grids = [input_grid(v, 4, 100) for v in layer_inputs(ann, x)]
    original = ann[0].weight.detach().clone()
    net = QuantizedQNetwork(ann, grids, None, 8, 4)
    hidden = []
    net.net[4].register_forward_pre_hook(lambda m, args: hidden.append(args[0]))  # the second Linear's input
    with CostMeter(net) as meter, torch.no_grad():
        net(x)
    steps = hidden[0] / grids[1].scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.min() >= 0 and steps.max() <= 15 + 1e-4
    counts = meter.summary()["counts"]
    assert (counts["weight_bits"], counts["activation_bits"]) == (8, 4)
    assert torch.equal(ann[0].weight, original)  # the source network is not changed
    assert torch.equal(net.net[1].weight, quantized_weight(original, 8))


def test_bias_correction_restores_each_layer_s_mean_output_and_is_rebuilt_from_its_record():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(256, 3) * 3
    grids = [input_grid(v, 4, 100) for v in layer_inputs(ann, x)]
    corrected = QuantizedQNetwork(ann, grids, None, 3, 4)  # coarse, so that the shifts are large
    with torch.no_grad():
        before = corrected(x).mean(0)
        shifts = bias_shifts(ann, corrected, x)
        after, target = corrected(x).mean(0), ann(x).mean(0)
    assert [len(s) for s in shifts] == [6, 2]
    assert (after - target).abs().max() < 1e-4 < (before - target).abs().max()
    # a deployed network is rebuilt from the source ANN, the grids and the recorded shifts

    class Q(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.input_divisor = ann, None
    rebuilt = quantized_network(Q(), grids, shifts, QuantizeOptions(weight_bits=3, activation_bits=4))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), corrected(x))


@pytest.mark.slow
def test_a_quantize_run_from_a_dqn_run_and_its_refusals(tmp_path):
    dqn = compare_run(tmp_path / "dqn", "--method", "dqn", *SHORT)
    run_dir = compare_run(tmp_path / "q", "--method", "quantize", "--source", dqn, "--set", "calibration_frames=300")
    record = json.loads((run_dir / "eval.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert record["ann_mean_return"] == json.loads((dqn / "eval.json").read_text())["mean_return"]
    assert 0 <= record["conformance"] <= 1 and len(config["activation_grids"]) == len(config["bias_shifts"]) == 3
    assert [len(shift) for shift in config["bias_shifts"]] == [16, 16, 2]  # one per output channel
    assert config["activation_grids"][0]["low"] == -127  # CartPole's observation is signed
    assert (record["neuro"]["counts"]["weight_bits"], record["neuro"]["counts"]["activation_bits"]) == (8, 8)
    # the deployed network is rebuilt from the source's weights and the recorded grids: same score
    again = compare("eval", run_dir, "--episodes", "3", "--seed", "0")
    assert again.returncode == 0, again.stderr

    before = snapshot(tmp_path)
    for args, fragment in [(["--set", "activation_bits=1"], "activation_bits=1 must be an integer in [2, 16]"),
                           (["--set", "weight_bits=17"], "weight_bits=17 must be an integer in [2, 16]")]:
        assert_clean_error(compare("run", "--method", "quantize", "--source", dqn, "--out", tmp_path / "bad", *args),
                           fragment)
    dsqn = compare_run(tmp_path / "dsqn", "--method", "dsqn", *SHORT, "--set", "timesteps=2")
    assert_clean_error(compare("run", "--method", "quantize", "--source", dsqn, "--out", tmp_path / "bad"),
                       "is a 'dsqn' run; --method quantize needs a finished dqn run")
    assert_clean_error(compare("table", "--results", tmp_path / "q", "--energy-model", "watts"), "--energy-model")
    assert not (tmp_path / "bad").exists()
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before
