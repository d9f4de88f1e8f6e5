"""Real training runs, as a user starts them. Slow (minutes), and part of CI."""

import json

import pytest
from conftest import compare_run

pytestmark = pytest.mark.learning


DQN_SEEDS = range(5)
SHARES_CARTPOLE_DQNS = pytest.mark.xdist_group("cartpole_dqns")  # one worker builds the fixture once


@pytest.fixture(scope="module")
def cartpole_dqns(tmp_path_factory):
    """The CartPole DQN at its default 50k-step budget on five seeds. Measured (final evaluation,
    seeds 0-4): 500.0, 500.0, 293.9, 500.0, 451.7 on one machine; 138.7, 483.6, 419.1, 500.0, 500.0
    on another of the same kind with the same code (float rounding differs between CPUs, and a
    DQN run amplifies it). So the bars below count seeds instead of trusting one."""
    return {seed: compare_run(tmp_path_factory.mktemp(f"dqn{seed}"), "--method", "dqn", "--game", "CartPole-v1",
                              "--steps", "50000", "--seed", str(seed)) for seed in DQN_SEEDS}


def mean_returns(run_dirs: dict) -> dict:
    return {seed: json.loads((d / "eval.json").read_text())["mean_return"] for seed, d in run_dirs.items()}


@SHARES_CARTPOLE_DQNS
def test_dqn_learns_cartpole_within_50k_steps_on_most_seeds(cartpole_dqns):
    """A random policy scores ~22; at least 3 of 5 seeds reach 150 (measured: 5 and 4 of 5)."""
    assert all(json.loads((d / "eval.json").read_text())["episodes"] == 30 for d in cartpole_dqns.values())
    returns = mean_returns(cartpole_dqns)
    assert sum(r >= 150 for r in returns.values()) >= 3, returns


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


def test_dsqn_learns_cartpole_on_its_default_budget(tmp_path):
    """Measured with the default init=data, seeds 0-4: 483.4 (the test's), 500.0, 495.4, 400.5,
    232.8 (init=default: 162.9, 500.0, 484.9, 128.2, 405.4); a random policy scores ~22. The bar is
    100, under 70% of the worst seed, so that a CPU whose float kernels round differently does not
    fail a run that learned."""
    run_dir = compare_run(tmp_path, "--method", "dsqn", "--game", "CartPole-v1")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["total_steps"] == 50_000 and config["method_options"]["timesteps"] == 8
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["mean_return"] >= 100, result["mean_return"]
    neuro = result["neuro"]
    assert neuro["timesteps"] == 8 and set(neuro["firing_rate"]) == {"lifs.0", "lifs.1"}


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
    assert neuro["energy_per_decision_j"] == pytest.approx(
        neuro["macs_per_decision"] * 4.6e-12 + neuro["synops_per_decision"] * 0.9e-12)


@SHARES_CARTPOLE_DQNS
def test_converted_cartpole_dqns_keep_their_scores_and_their_choices(cartpole_dqns, tmp_path):
    """Issue 4 on the DQNs above, with channel-wise normalization, on three seeds: for at least
    two, at some T <= 64 the SNN reaches 90% of its ANN's return with conformance_decisive >= 0.95,
    and its Q error falls from T=8 to T=64. (The README compares it with layer-wise normalization.)
    Judged per seed against that seed's own ANN: a DQN that learned less converts no worse. Every
    T's entry is read, not the T the validation episodes choose, so one validation episode will do."""
    outcomes = {}
    for seed in (0, 1, 2):
        ann_return = mean_returns(cartpole_dqns)[seed]
        run_dir = compare_run(tmp_path / str(seed), "--method", "convert", "--source", str(cartpole_dqns[seed]),
                              "--timesteps", "8,64", "--calibration-frames", "5000",
                              "--set", "normalization=channel", "--set", "validation_episodes=1")
        sweep = {e["timesteps"]: e for e in json.loads((run_dir / "eval.json").read_text())["sweep"]}
        keeps = any(e["mean_return"] >= 0.9 * ann_return and e["conformance_decisive"] >= 0.95
                    for e in sweep.values())
        outcomes[seed] = (keeps and sweep[64]["mean_abs_q_error"] < sweep[8]["mean_abs_q_error"],
                          ann_return, {t: (e["mean_return"], e["conformance_decisive"]) for t, e in sweep.items()})
    assert sum(ok for ok, *_ in outcomes.values()) >= 2, outcomes


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


@pytest.mark.parametrize("method", ["ppo", "hybrid"])
def test_actor_critic_learns_cartpole_on_its_default_budget(tmp_path, method):
    run_dir = compare_run(tmp_path, "--method", method, "--game", "CartPole-v1")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["total_steps"] == 50_000 and config["preset"] == "cartpole"
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["mean_return"] >= 150, result["mean_return"]
    if method == "hybrid":
        assert config["method_options"]["timesteps"] == 5
        assert set(result["neuro"]["firing_rate"]) == {"encoder", "lifs.0", "lifs.1", "lifs.2"}


@pytest.mark.parametrize("method", ["ppo", "hybrid"])
def test_actor_critic_on_breakout_records_scores_and_the_actors_cost(tmp_path, method):
    run_dir = compare_run(tmp_path, "--method", method, "--game", "Breakout", "--steps", "3000",
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
