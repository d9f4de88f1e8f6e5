import json

import numpy as np
import pytest
import torch
from conftest import compare as compare_cli
from conftest import snapshot as digest
from torch import nn

from converters.convert import ConvertedSNN, ConvertOptions, layer_scales, normalize_ann


def small_ann(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def hidden_activations(ann, x):
    """Outputs of every ReLU, in order."""
    acts = []
    with torch.no_grad():
        for layer in ann:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                acts.append(x)
    return acts


@pytest.mark.parametrize("percentile", [99.0, 99.9])
def test_normalized_layers_have_their_percentile_at_one(percentile):
    ann, x = small_ann(), torch.randn(5000, 4) * 2
    normalized = normalize_ann(ann, layer_scales(ann, x, percentile), keep_output_scale=True)
    for act in hidden_activations(normalized, x):
        positive = act[act > 0].numpy()
        assert np.percentile(positive, percentile) == pytest.approx(1.0, abs=0.02)
    # The membrane readout keeps the ANN's function: same Q-values.
    with torch.no_grad():
        torch.testing.assert_close(normalized(x), ann(x), rtol=1e-4, atol=1e-4)


def test_channel_wise_normalization_puts_every_channel_at_one_and_keeps_the_function():
    torch.manual_seed(3)
    ann = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(3 * 2 * 2, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(600, 2, 8, 8)
    scales = layer_scales(ann, x, 99.0, per_channel=True)
    assert [len(s) for s in scales] == [4, 3, 8, 2]
    normalized = normalize_ann(ann, scales, keep_output_scale=True)
    for act in hidden_activations(normalized, x):
        channels = act.movedim(1, -1).reshape(-1, act.shape[1]) if act.dim() > 2 else act
        for c in range(channels.shape[1]):
            positive = channels[:, c][channels[:, c] > 0].numpy()
            if positive.size > 50:
                assert np.percentile(positive, 99.0) == pytest.approx(1.0, abs=0.03)
    with torch.no_grad():
        torch.testing.assert_close(normalized(x), ann(x), rtol=1e-4, atol=1e-4)


def test_max_norm_keeps_every_calibration_activation_at_most_one():
    ann, x = small_ann(1), torch.randn(5000, 4) * 2
    normalized = normalize_ann(ann, layer_scales(ann, x, 100.0), keep_output_scale=True)
    for act in hidden_activations(normalized, x):
        assert act.max() <= 1.0 + 1e-5
        assert act.max() >= 1.0 - 1e-5


def test_snn_output_approaches_the_ann_as_t_grows():
    ann, x = small_ann(2), torch.randn(3000, 4) * 2
    normalized = normalize_ann(ann, layer_scales(ann, x, 99.9), keep_output_scale=True)
    probe = x[:200]
    with torch.no_grad():
        q_ann = ann(probe)
        errors = [(ConvertedSNN(normalized, ConvertOptions(), t, None, 1.0)(probe) - q_ann).abs().mean().item()
                  for t in (8, 32, 128, 512)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < errors[0] / 8


def test_robust_readout_adds_the_residual_membrane_to_the_spike_count():
    ann, x = small_ann(4), torch.randn(3000, 4) * 2
    scales = layer_scales(ann, x, 99.9)
    normalized = normalize_ann(ann, scales, keep_output_scale=False)
    probe = x[:300]
    with torch.no_grad():
        q_ann = ann(probe)
        errors = {}
        for readout in ("rate", "robust"):
            snn = ConvertedSNN(normalized, ConvertOptions(readout=readout), 64, None, scales[-1])
            errors[readout] = (snn(probe) - q_ann).abs().mean().item()
    assert errors["robust"] < errors["rate"]


def test_lif_option_builds_leaky_sinabs_layers():
    import sinabs.layers as sl

    ann, x = small_ann(5), torch.randn(500, 4)
    normalized = normalize_ann(ann, layer_scales(ann, x, 99.9), keep_output_scale=True)
    snn = ConvertedSNN(normalized, ConvertOptions(neuron="lif", tau_mem=10.0), 16, None, 1.0)
    assert all(isinstance(layer, sl.LIFSqueeze) for layer in snn.spiking_layers)
    with torch.no_grad():
        q = snn(x[:7])
    assert q.shape == (7, 3) and torch.isfinite(q).all()


@pytest.fixture(scope="module")
def cartpole_dqn(tmp_path_factory):
    out = tmp_path_factory.mktemp("dqn")
    proc = compare_cli("run", "--method", "dqn", "--game", "CartPole-v1", "--steps", "3000", "--quiet",
                       "--out", out, "--set", "eval_episodes=2", "--set", "mlp_hidden=32,32",
                       "--set", "learning_starts=500")
    assert proc.returncode == 0, proc.stderr
    return next(out.glob("runs/*"))


@pytest.mark.slow
def test_conversion_is_a_run_of_its_own_and_leaves_the_source_alone(cartpole_dqn, tmp_path):
    before = digest(cartpole_dqn)
    proc = compare_cli("run", "--method", "convert", "--source", cartpole_dqn, "--timesteps", "4,16",
                       "--calibration-frames", "500", "--set", "eval_episodes=2", "--set", "validation_episodes=3",
                       "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert digest(cartpole_dqn) == before
    (start,) = [line for line in proc.stderr.splitlines() if line.startswith("run: convert")]
    assert f"from {cartpole_dqn.resolve()}" in start and "steps" not in start  # its own work, not its source's budget
    assert "compare: convert: calibrating on 500 frames" in proc.stderr  # then one line per T as it is done
    assert [line.split(":")[2].split(" (")[0].strip() for line in proc.stderr.splitlines()
            if line.startswith("compare: convert: T=")] == ["T=4", "T=16"]
    (run_dir,) = tmp_path.glob("runs/*__convert__*")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["source"] == str(cartpole_dqn.resolve()) and config["convert"]["percentile"] == 99.9
    result = json.loads((run_dir / "eval.json").read_text())
    assert [e["timesteps"] for e in result["sweep"]] == [4, 16]
    for entry in result["sweep"]:
        assert len(entry["episode_returns"]) == 2
        assert 0 <= entry["conformance"] <= 1 and entry["mean_abs_q_error"] >= 0
        assert entry["neuro"]["timesteps"] == entry["timesteps"]
        assert set(entry["neuro"]["firing_rate"]) == {"rest.0", "rest.2"}
        assert len(entry["validation_episode_returns"]) == 3  # T is chosen on these, not the reported ones
    chosen = max(result["sweep"], key=lambda e: e["validation_mean_return"])  # ties: the smallest T
    assert result["selection"] == "validation" and result["selected_timesteps"] == chosen["timesteps"]
    assert result["mean_return"] == chosen["mean_return"]


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["--timesteps", "0,8"], "must be positive integers"),
    (["--timesteps", "8,x"], "not an integer"),
    (["--percentile", "0"], "percentile=0.0 must lie in (0, 100]"),
    (["--percentile", "101"], "must lie in (0, 100]"),
    (["--readout", "spikes"], "choose one of: membrane, rate, robust"),
    (["--set", "validation_episodes=0"], "validation_episodes=0 must be a positive integer"),
])
def test_bad_conversion_options(cartpole_dqn, tmp_path, args, fragment):
    before = digest(cartpole_dqn)
    proc = compare_cli("run", "--method", "convert", "--source", cartpole_dqn, *args, "--out", tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert fragment in proc.stderr
    assert digest(cartpole_dqn) == before


@pytest.mark.slow
def test_bad_sources(cartpole_dqn, tmp_path):
    missing = compare_cli("run", "--method", "convert", "--source", tmp_path / "nope", "--out", tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    no_source = compare_cli("run", "--method", "convert", "--out", tmp_path)
    assert no_source.returncode == 2 and "needs --source" in no_source.stderr
    other = tmp_path / "other"
    other.mkdir()
    dqn_config = json.loads((cartpole_dqn / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**dqn_config, "method": "dsqn"}))  # a dsqn run's
    wrong = compare_cli("run", "--method", "convert", "--source", other, "--out", tmp_path)
    assert wrong.returncode == 2 and "needs a finished dqn run" in wrong.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in cartpole_dqn.iterdir():
        if p.is_file():
            (broken / p.name).write_bytes(p.read_bytes())
    weights = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(weights[: len(weights) // 3])
    corrupt = compare_cli("run", "--method", "convert", "--source", broken, "--out", tmp_path)
    assert corrupt.returncode == 2 and "truncated or corrupt" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr + wrong.stderr + missing.stderr
