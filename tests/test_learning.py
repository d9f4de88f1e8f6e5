"""Real runs on Atari, as a user starts them: the DQN on Pong, the DSQN on Breakout, a short
conversion (the CartPole DQN: test_learning_cartpole_dqn.py; actor-critic methods:
test_learning_actor_critic.py; the DSQN learning: test_minatar.py). Slow (minutes), and part of CI."""

import json

import pytest
from conftest import compare_run

pytestmark = pytest.mark.learning

def test_dqn_on_pong_records_full_game_scores_and_a_training_curve(tmp_path):
    run_dir = compare_run(tmp_path, "--method", "dqn", "--game", "Pong", "--steps", "5000",
                          "--eval-episodes", "4")
    result = json.loads((run_dir / "eval.json").read_text())
    assert len(result["episode_returns"]) == 4
    assert all(-21 <= r <= 21 for r in result["episode_returns"])
    # A full game ends when one side reaches 21: never at a life loss or a frame budget this short.
    assert all(abs(r) >= 1 for r in result["episode_returns"])
    assert all(n > 500 for n in result["episode_lengths"])
    assert result["hns"] is not None and result["protocol"]["name"] == "nature"
    curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert curve and all(-21 <= r["episode_return"] <= 21 for r in curve)
    assert curve[-1]["step"] <= 5000 and curve[-1]["frames"] == 4 * curve[-1]["step"]


def test_dsqn_on_breakout_records_scores_and_the_cost_of_each_decision(tmp_path):
    run_dir = compare_run(tmp_path, "--method", "dsqn", "--game", "Breakout", "--steps", "3000",
                          "--eval-episodes", "3")
    result = json.loads((run_dir / "eval.json").read_text())
    assert len(result["episode_returns"]) == 3 and all(r >= 0 for r in result["episode_returns"])
    neuro = result["neuro"]
    assert set(neuro["firing_rate"]) == {"lifs.0", "lifs.1", "lifs.2", "lifs.3"}
    assert all(0 <= rate <= 1 for rate in neuro["firing_rate"].values())
    # conv1 runs once per decision on the analog frame: 32*20*20 outputs x 4*8*8 inputs
    assert neuro["macs_per_decision"] == 32 * 20 * 20 * 256
    # No update before step 50,000: the network as initialised. With the papers' init it is silent
    # on Atari frames (no spikes, no synops); the default data-driven init makes every layer fire.
    assert all(rate > 0 for rate in neuro["firing_rate"].values()), neuro["firing_rate"]
    assert neuro["synops_per_decision"] > 0 and not result["silent_layers"]
    assert neuro["energy"]["compute"]["once"]["total_j"] == pytest.approx(
        neuro["macs_per_decision"] * 4.6e-12 + neuro["synops_per_decision"] * 0.9e-12)


def test_conversion_of_a_short_atari_dqn_run_writes_its_sweep(tmp_path):
    dqn_dir = compare_run(tmp_path / "dqn", "--method", "dqn", "--game", "Breakout", "--steps", "1000",
                          "--eval-episodes", "1")
    run_dir = compare_run(tmp_path / "snn", "--method", "convert", "--source", str(dqn_dir),
                          "--timesteps", "4,8", "--calibration-frames", "300", "--set", "eval_episodes=1",
                          "--set", "validation_episodes=1")
    result = json.loads((run_dir / "eval.json").read_text())
    assert [e["timesteps"] for e in result["sweep"]] == [4, 8]
    for entry in result["sweep"]:
        assert entry["episodes"] == 1 and entry["episode_returns"][0] >= 0
        assert set(entry["neuro"]["firing_rate"]) == {"rest.0", "rest.2", "rest.4", "rest.7"}
        assert entry["neuro"]["macs_per_decision"] == 32 * 20 * 20 * 256  # conv1, once
