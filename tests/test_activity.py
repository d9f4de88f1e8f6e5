"""`compare plot --activity RUN`: one episode of a spiking run, recorded and drawn."""

import pytest
from conftest import assert_clean_error, compare, compare_run

from compare.app.activity import record_activity
from compare.core.accounting import CostMeter
from compare.core.evaluation import evaluate_policy
from compare.core.seeding import stream_seed
from compare.core.training import load_deployed

pytestmark = pytest.mark.slow  # short training runs in subprocesses

SHORT = ["--game", "CartPole-v1", "--steps", "1500", "--set", "eval_episodes=2", "--set", "learning_starts=500"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dqn = compare_run(root / "dqn", "--method", "dqn", *SHORT, "--set", "mlp_hidden=32,32")
    return {"dsqn": compare_run(root / "dsqn", "--method", "dsqn", *SHORT, "--set", "timesteps=4",
                                "--set", "mlp_hidden=32,32"),
            "convert": compare_run(root / "convert", "--method", "convert", "--source", dqn, "--timesteps", "8",
                                   "--calibration-frames", "300"),
            "hybrid": compare_run(root / "hybrid", "--method", "hybrid", "--game", "CartPole-v1", "--steps", "2048",
                                  "--set", "eval_episodes=2", "--set", "mlp_hidden=32,32"),
            "dqn": dqn}


@pytest.mark.parametrize("method", ["dsqn", "convert", "hybrid"])
def test_the_raster_counts_every_spike_the_network_makes_in_that_episode(runs, method):
    """The recorded spikes per layer equal what the cost meter counts when the same episode (same
    seed stream, same policy) is played again with it attached."""
    deployed = load_deployed(runs[method])
    activity = record_activity(deployed, deployed.settings.seed)
    assert activity.decisions > 0 and activity.layers
    policy, epsilon = deployed.policy(stream_seed(deployed.settings.seed, "activity"))
    with CostMeter(deployed.network, synapses=False) as meter:
        evaluate_policy(policy, deployed.spec, deployed.settings.protocol, 1,
                        stream_seed(deployed.settings.seed, "activity"), epsilon=epsilon)
    assert meter.decisions == activity.decisions
    rates = meter.firing()["firing_rate"]
    assert set(rates) == set(activity.layers)
    for name, layer in activity.layers.items():
        assert layer.spikes == pytest.approx(rates[name] * meter.neuron_steps[name]), name
        assert layer.neurons * activity.timesteps * activity.decisions == meter.neuron_steps[name]
    assert activity.output and activity.output[0].shape[0] == activity.timesteps


def test_the_cli_draws_the_figure_and_refuses_an_ann(runs, tmp_path):
    res = compare("plot", "--activity", runs["dsqn"], "--out", tmp_path / "figs")
    assert res.returncode == 0, res.stderr
    (png,) = (tmp_path / "figs").glob("activity__*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.name == res.stdout.strip().split("/")[-1]
    assert_clean_error(compare("plot", "--activity", runs["dqn"], "--out", tmp_path / "no"),
                       "--activity draws a spiking network")
    assert not (tmp_path / "no").exists()
