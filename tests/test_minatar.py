"""Every pipeline learns from pixels: MinAtar Breakout (Young & Tian 2019), 10x10 frames of 4
binary channels, as each method's user starts it (`compare run`). Slow (minutes), part of CI.

A uniformly random policy scores 0.48 there under the harness (`compare run --method dqn
--game MinAtar/Breakout --steps 1 --set eval_epsilon=1.0 --eval-episodes 100`, measured), so
no bar below is under 3x random (1.44). Each bar is at most 70% of the worse of two seeds we
measured (README, "Learning from pixels").

The DQN-learner runs here keep their MinAtar preset except what the short budget forces on
both alike: learning from step 1,000 and epsilon decayed over half the run (the preset's 5,000
and 100,000 assume Young & Tian's 5M steps).
"""

import json

import pytest
from conftest import compare_run

pytestmark = pytest.mark.learning

RANDOM_RETURN = 0.48
GAME = "MinAtar/Breakout"


EVAL = ["--set", "eval_episodes=100"]  # a 30-episode mean varies by +-0.3 here; 100 halves that


def short_schedule(steps: int) -> list[str]:
    return ["--steps", str(steps), "--set", "learning_starts=1000", "--set", f"epsilon_decay_steps={steps // 2}",
            *EVAL]


def final_return(run_dir) -> float:
    return json.loads((run_dir / "eval.json").read_text())["mean_return"]


@pytest.fixture(scope="module")
def minatar_dqn(tmp_path_factory):
    return compare_run(tmp_path_factory.mktemp("dqn"), "--method", "dqn", "--game", GAME, "--seed", "0",
                       *short_schedule(DQN_STEPS))


DQN_STEPS, DQN_BAR = 40_000, 4.4      # measured 6.42 and 6.71 (seeds 0, 1)
DSQN_STEPS, DSQN_BAR = 15_000, 2.5     # measured 3.95 and 3.68
ACTOR_CRITIC = {"ppo": (100_000, 1.8),  # measured 2.98 and 2.65
                "hybrid": (200_000, 2.4)}  # measured 3.54 and 4.00


def test_dqn_learns_minatar_breakout(minatar_dqn):
    config = json.loads((minatar_dqn / "config.json").read_text())
    assert config["preset"] == "minatar" and config["dqn"]["train_freq"] == 1
    assert config["dqn"]["optimizer"] == "rmsprop" and config["dqn"]["optimizer_momentum"] == 0.95
    assert final_return(minatar_dqn) >= max(DQN_BAR, 3 * RANDOM_RETURN), final_return(minatar_dqn)


def test_dsqn_learns_minatar_breakout_at_its_default_t(tmp_path):
    run_dir = compare_run(tmp_path, "--method", "dsqn", "--game", GAME, "--seed", "0", *short_schedule(DSQN_STEPS))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_options"]["timesteps"] == 8 and config["method_options"]["weight_gain"] == 8.0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["mean_return"] >= max(DSQN_BAR, 3 * RANDOM_RETURN), result["mean_return"]
    assert all(rate > 0 for rate in result["neuro"]["firing_rate"].values()), result["neuro"]["firing_rate"]


def test_converted_minatar_dqn_keeps_90_percent_of_its_return(minatar_dqn, tmp_path):
    ann_return = final_return(minatar_dqn)
    run_dir = compare_run(tmp_path, "--method", "convert", "--source", str(minatar_dqn), "--timesteps", "16,32,64")
    sweep = {e["timesteps"]: e["mean_return"] for e in json.loads((run_dir / "eval.json").read_text())["sweep"]}
    assert max(sweep.values()) >= 0.9 * ann_return, (ann_return, sweep)


@pytest.mark.parametrize("method", sorted(ACTOR_CRITIC))
def test_actor_critic_learns_minatar_breakout(tmp_path, method):
    steps, bar = ACTOR_CRITIC[method]
    run_dir = compare_run(tmp_path, "--method", method, "--game", GAME, "--seed", "0", "--steps", str(steps), *EVAL)
    assert json.loads((run_dir / "config.json").read_text())["preset"] == "atari"
    assert final_return(run_dir) >= max(bar, 3 * RANDOM_RETURN), final_return(run_dir)
