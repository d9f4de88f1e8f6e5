"""Every pipeline learns from pixels: MinAtar Breakout (Young & Tian 2019), 10x10 frames of 4
binary channels, as each method's user starts it (`compare run`). Slow (minutes), part of CI.

A uniformly random policy scores 0.412 there under the harness (10,000 episodes; the shipped
normalization table, compare.core.scores), so no bar below is under 3x random (1.24). Each bar
is at most 70% of the worst seed we measured (README, "Learning from pixels"). The DQN's bar is
judged over three seeds: the same seed, settings and package versions scored 6.42 on 2026-11-30
and 4.18 on 2026-12-02 (machines of the same kind; the cause is not pinned down, while the
spiking runs and the CartPole MLP runs gave the same numbers on both days).

The DQN-learner runs here keep their MinAtar preset except what the short budget forces on
both alike: learning from step 1,000 and epsilon decayed over half the run (the preset's 5,000
and 100,000 assume Young & Tian's 5M steps).
"""

import json

import pytest
from conftest import compare_run

pytestmark = pytest.mark.learning

RANDOM_RETURN = 0.412
GAME = "MinAtar/Breakout"


EVAL = ["--set", "eval_episodes=100"]  # a 30-episode mean varies by +-0.3 here; 100 halves that


def short_schedule(steps: int) -> list[str]:
    return ["--steps", str(steps), "--set", "learning_starts=1000", "--set", f"epsilon_decay_steps={steps // 2}",
            *EVAL]


SHARES_MINATAR_DQNS = pytest.mark.xdist_group("minatar_dqns")  # one worker builds the fixture once


def final_return(run_dir) -> float:
    return json.loads((run_dir / "eval.json").read_text())["mean_return"]


@pytest.fixture(scope="module")
def minatar_dqns(tmp_path_factory):
    return {seed: compare_run(tmp_path_factory.mktemp(f"dqn{seed}"), "--method", "dqn", "--game", GAME,
                              "--seed", str(seed), *short_schedule(DQN_STEPS)) for seed in DQN_SEEDS}


@pytest.fixture(scope="module")
def minatar_dqn(minatar_dqns):
    return minatar_dqns[0]


# measured seeds 0, 1: 6.42, 6.71 (2026-11-30); seeds 0, 1, 2: 4.18, 7.34, 7.19 (2026-12-02)
DQN_STEPS, DQN_BAR, DQN_SEEDS = 40_000, 2.9, (0, 1, 2)
# dsqn and hybrid: with the default init=data since 2026-12-02 (init=default: 3.95, 3.68 and 3.54, 4.00)
DSQN_STEPS, DSQN_BAR = 15_000, 2.5     # measured seeds 0, 1: 4.38, 3.94
ACTOR_CRITIC = {"ppo": (100_000, 1.8),  # measured 2.98 and 2.65
                "hybrid": (200_000, 2.0)}  # measured seeds 0, 1: 2.97, 4.05


@SHARES_MINATAR_DQNS
def test_dqn_learns_minatar_breakout_on_most_seeds(minatar_dqns):
    config = json.loads((minatar_dqns[0] / "config.json").read_text())
    assert config["preset"] == "minatar" and config["dqn"]["train_freq"] == 1
    assert config["dqn"]["optimizer"] == "rmsprop" and config["dqn"]["optimizer_momentum"] == 0.95
    returns = {seed: final_return(run) for seed, run in minatar_dqns.items()}
    assert sum(r >= max(DQN_BAR, 3 * RANDOM_RETURN) for r in returns.values()) >= 2, returns


def test_dsqn_learns_minatar_breakout_at_its_default_t(tmp_path):
    run_dir = compare_run(tmp_path, "--method", "dsqn", "--game", GAME, "--seed", "0", *short_schedule(DSQN_STEPS))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_options"]["timesteps"] == 8 and config["method_options"]["weight_gain"] == 8.0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["mean_return"] >= max(DSQN_BAR, 3 * RANDOM_RETURN), result["mean_return"]
    assert all(rate > 0 for rate in result["neuro"]["firing_rate"].values()), result["neuro"]["firing_rate"]


@SHARES_MINATAR_DQNS
def test_converted_minatar_dqn_keeps_90_percent_of_its_return(minatar_dqn, tmp_path):
    ann_return = final_return(minatar_dqn)
    run_dir = compare_run(tmp_path, "--method", "convert", "--source", str(minatar_dqn), "--timesteps", "16,32,64",
                          "--set", "validation_episodes=1")  # every T's entry is read, not the chosen T
    sweep = {e["timesteps"]: e["mean_return"] for e in json.loads((run_dir / "eval.json").read_text())["sweep"]}
    assert max(sweep.values()) >= 0.9 * ann_return, (ann_return, sweep)


@pytest.mark.parametrize("method", sorted(ACTOR_CRITIC))
def test_actor_critic_learns_minatar_breakout(tmp_path, method):
    steps, bar = ACTOR_CRITIC[method]
    run_dir = compare_run(tmp_path, "--method", method, "--game", GAME, "--seed", "0", "--steps", str(steps), *EVAL)
    assert json.loads((run_dir / "config.json").read_text())["preset"] == "atari"
    assert final_return(run_dir) >= max(bar, 3 * RANDOM_RETURN), final_return(run_dir)
