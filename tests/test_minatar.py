"""MinAtar Breakout: the DSQN and PPO, each from scratch (the DQN and its conversion:
test_minatar_dqn.py; the hybrid's 200k-step run left the suite for its time, docs/minatar.md).
Shared setup: tests/minatar_runs.py."""

import json

import pytest
from conftest import compare_run
from minatar_runs import EVAL, GAME, RANDOM_RETURN, final_return, short_schedule

pytestmark = pytest.mark.learning

# dsqn: with the default init=data since 2026-12-02 (init=default: 3.95, 3.68)
DSQN_STEPS, DSQN_BAR = 15_000, 2.5     # measured seeds 0, 1: 4.38, 3.94
PPO_STEPS, PPO_BAR = 100_000, 1.8      # measured seeds 0, 1: 2.98, 2.65


def test_dsqn_learns_minatar_breakout_at_its_default_t(tmp_path):
    run_dir = compare_run(tmp_path, "--method", "dsqn", "--game", GAME, "--seed", "0", *short_schedule(DSQN_STEPS))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_options"]["timesteps"] == 8 and config["method_options"]["weight_gain"] == 8.0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["mean_return"] >= max(DSQN_BAR, 3 * RANDOM_RETURN), result["mean_return"]
    assert all(rate > 0 for rate in result["neuro"]["firing_rate"].values()), result["neuro"]["firing_rate"]


def test_ppo_learns_minatar_breakout(tmp_path):
    run_dir = compare_run(tmp_path, "--method", "ppo", "--game", GAME, "--seed", "0", "--steps", str(PPO_STEPS), *EVAL)
    assert json.loads((run_dir / "config.json").read_text())["preset"] == "atari"
    assert final_return(run_dir) >= max(PPO_BAR, 3 * RANDOM_RETURN), final_return(run_dir)
