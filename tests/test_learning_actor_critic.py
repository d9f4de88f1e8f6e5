"""PPO and the hybrid actor-critic on CartPole (to a score) and on Breakout (what a run records).
Real training runs, as a user starts them; slow (minutes), part of CI."""

import json

import pytest
from conftest import compare_run

pytestmark = pytest.mark.learning


# Measured 2026-12-03 (commit 7440cee, final evaluation, seeds 0-4): ppo 500.0, 467.6, 500.0, 148.8,
# 500.0; hybrid 495.0, 486.2, 500.0, 472.1, 500.0. A random policy scores ~22. The bar is 100, under
# 70% of the worst seed measured, and judged over seeds (at least 2 reach it: PPO's of seeds 0-2;
# the hybrid's, whose worst seed scored 472 and whose run costs about five of PPO's, of seeds 0-1),
# so that a CPU whose float kernels round differently cannot fail a run that learned.
CARTPOLE_SEEDS, CARTPOLE_BAR = {"ppo": (0, 1, 2), "hybrid": (0, 1)}, 100


@pytest.mark.parametrize("method", ["ppo", "hybrid"])
def test_actor_critic_learns_cartpole_on_its_default_budget_on_most_seeds(tmp_path, method):
    returns = {}
    for seed in CARTPOLE_SEEDS[method]:
        run_dir = compare_run(tmp_path / str(seed), "--method", method, "--game", "CartPole-v1", "--seed", str(seed))
        config = json.loads((run_dir / "config.json").read_text())
        assert config["total_steps"] == 50_000 and config["preset"] == "cartpole"
        result = json.loads((run_dir / "eval.json").read_text())
        returns[seed] = result["mean_return"]
        if method == "hybrid":
            assert config["method_options"]["timesteps"] == 5
            assert set(result["neuro"]["firing_rate"]) == {"encoder", "lifs.0", "lifs.1", "lifs.2"}
    assert sum(r >= CARTPOLE_BAR for r in returns.values()) >= 2, returns


@pytest.mark.parametrize("method", ["ppo", "hybrid"])
def test_actor_critic_on_breakout_records_scores_and_the_actors_cost(tmp_path, method):
    # One rollout of the atari preset (8 envs x 128 steps) and its update: what a run records, not learning.
    run_dir = compare_run(tmp_path, "--method", method, "--game", "Breakout", "--steps", "1024",
                          "--eval-episodes", "2")
    result = json.loads((run_dir / "eval.json").read_text())
    assert len(result["episode_returns"]) == 2 and all(r >= 0 for r in result["episode_returns"])
    assert all(n > 0 for n in result["episode_lengths"]) and result["hns"] is not None
    neuro, critic = result["neuro"], result["critic_neuro_training_only"]
    assert neuro["macs_per_decision"] > 0 and critic["macs_per_decision"] > 0
    if method == "hybrid":  # the actor's conv1 runs once on the analog frame; the rest is spikes
        assert neuro["macs_per_decision"] == 32 * 20 * 20 * 256
        assert set(neuro["firing_rate"]) == {"lifs.0", "lifs.1", "lifs.2", "lifs.3", "lifs.4"}
    else:
        assert "firing_rate" not in neuro
