"""Pictures of what an agent does: `compare plot --activity RUN` (one episode of a spiking
run's layers) and `compare eval RUN --video FILE.gif` (one episode drawn)."""

import numpy as np
import pytest
from conftest import assert_clean_error, compare, compare_run
from PIL import Image

from compare.app.activity import record_activity
from compare.app.video import atari_frame, frame_drawer, minatar_frame, record_video
from compare.core.accounting import CostMeter
from compare.core.envs import resolve_env
from compare.core.errors import UsageError
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


@pytest.mark.parametrize("method", ["dqn", "dsqn", "convert", "hybrid"])
def test_the_video_has_one_frame_per_decision_of_the_episode(runs, method, tmp_path):
    played = record_video(runs[method], tmp_path / "episode.gif")
    with Image.open(tmp_path / "episode.gif") as gif:
        frames = gif.n_frames
        assert gif.size == (300, 200 + 12)  # CartPole's drawing above the strip that names the decision
    # the same episode played again without drawing: as many decisions
    deployed = load_deployed(runs[method])
    policy, epsilon = deployed.policy(stream_seed(deployed.settings.seed, "video"))
    again = evaluate_policy(policy, deployed.spec, deployed.settings.protocol, 1,
                            stream_seed(deployed.settings.seed, "video"), epsilon=epsilon)
    assert frames == played["frames"] == played["decisions"] == again.episode_lengths[0] > 1


def test_the_cli_writes_a_video_and_refuses_what_it_cannot_draw(runs, tmp_path):
    res = compare("eval", runs["dsqn"], "--video", tmp_path / "dsqn.gif")
    assert res.returncode == 0, res.stderr
    assert "seed stream 'video'" in res.stdout and (tmp_path / "dsqn.gif").is_file()
    assert_clean_error(compare("eval", runs["dsqn"], "--video", tmp_path / "dsqn.mp4"), "ending in .gif")
    assert_clean_error(compare("eval", runs["dsqn"], "--video", tmp_path / "v.gif", "--attack", "fgsm"),
                       "--video draws one clean episode")
    assert not (tmp_path / "dsqn.mp4").exists() and not (tmp_path / "v.gif").exists()


def test_frames_of_minatar_and_atari_and_games_without_a_drawing():
    state = np.zeros((4, 10, 10), dtype=np.uint8)
    state[0, 9, 4], state[3, 0, :] = 1, 1  # paddle, a row of bricks
    image = minatar_frame(state)
    assert image.shape == (200, 200, 3)
    assert tuple(image[9 * 20, 4 * 20]) == (31, 119, 180) and tuple(image[0, 0]) == (214, 39, 40)
    assert image[100, 100].sum() == 0
    stack = np.zeros((4, 84, 84), dtype=np.uint8)
    stack[-1, 10, 20] = 200
    frame = atari_frame(stack)
    assert frame.shape == (252, 252, 3) and tuple(frame[30, 60]) == (200, 200, 200)
    with pytest.raises(UsageError, match="Acrobot-v1 has no drawing here"):
        frame_drawer(resolve_env("Acrobot-v1"))
