"""MinAtar Breakout: the DSQN, PPO and the hybrid, each from scratch (the DQN and its
conversion: test_minatar_dqn.py). Shared setup: tests/minatar_runs.py."""

import json

import pytest
from conftest import compare_run
from minatar_runs import EVAL, GAME, RANDOM_RETURN, final_return, short_schedule

pytestmark = pytest.mark.learning

# dsqn and hybrid: with the default init=data since 2026-12-02 (init=default: 3.95, 3.68 and 3.54, 4.00)
DSQN_STEPS, DSQN_BAR = 15_000, 2.5     # measured seeds 0, 1: 4.38, 3.94
ACTOR_CRITIC = {"ppo": (100_000, 1.8),  # measured 2.98 and 2.65
                "hybrid": (200_000, 2.0)}  # measured seeds 0, 1: 2.97, 4.05


def test_dsqn_learns_minatar_breakout_at_its_default_t(tmp_path):
    run_dir = compare_run(tmp_path, "--method", "dsqn", "--game", GAME, "--seed", "0", *short_schedule(DSQN_STEPS))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_options"]["timesteps"] == 8 and config["method_options"]["weight_gain"] == 8.0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["mean_return"] >= max(DSQN_BAR, 3 * RANDOM_RETURN), result["mean_return"]
    assert all(rate > 0 for rate in result["neuro"]["firing_rate"].values()), result["neuro"]["firing_rate"]


@pytest.mark.parametrize("method", sorted(ACTOR_CRITIC))
def test_actor_critic_learns_minatar_breakout(tmp_path, method):
    steps, bar = ACTOR_CRITIC[method]
    run_dir = compare_run(tmp_path, "--method", method, "--game", GAME, "--seed", "0", "--steps", str(steps), *EVAL)
    assert json.loads((run_dir / "config.json").read_text())["preset"] == "atari"
    assert final_return(run_dir) >= max(bar, 3 * RANDOM_RETURN), final_return(run_dir)
