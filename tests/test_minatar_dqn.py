"""MinAtar Breakout: the DQN on three seeds and its conversion (one module: the conversion
reads the DQN runs the module's fixture trains once). Shared setup: tests/minatar_runs.py."""

import json

import pytest
from conftest import compare_run
from minatar_runs import GAME, RANDOM_RETURN, final_return, short_schedule

pytestmark = pytest.mark.learning

# measured seeds 0, 1: 6.42, 6.71 (2026-11-30); seeds 0, 1, 2: 4.18, 7.34, 7.19 (2026-12-02)
DQN_STEPS, DQN_BAR, DQN_SEEDS = 40_000, 2.9, (0, 1, 2)


@pytest.fixture(scope="module")
def minatar_dqns(tmp_path_factory):
    return {seed: compare_run(tmp_path_factory.mktemp(f"dqn{seed}"), "--method", "dqn", "--game", GAME,
                              "--seed", str(seed), *short_schedule(DQN_STEPS)) for seed in DQN_SEEDS}


@pytest.fixture(scope="module")
def minatar_dqn(minatar_dqns):
    return minatar_dqns[0]


def test_dqn_learns_minatar_breakout_on_most_seeds(minatar_dqns):
    config = json.loads((minatar_dqns[0] / "config.json").read_text())
    assert config["preset"] == "minatar" and config["dqn"]["train_freq"] == 1
    assert config["dqn"]["optimizer"] == "rmsprop" and config["dqn"]["optimizer_momentum"] == 0.95
    returns = {seed: final_return(run) for seed, run in minatar_dqns.items()}
    assert sum(r >= max(DQN_BAR, 3 * RANDOM_RETURN) for r in returns.values()) >= 2, returns


def test_converted_minatar_dqn_keeps_90_percent_of_its_return(minatar_dqn, tmp_path):
    ann_return = final_return(minatar_dqn)
    run_dir = compare_run(tmp_path, "--method", "convert", "--source", str(minatar_dqn), "--timesteps", "16,32,64",
                          "--set", "validation_episodes=1")  # every T's entry is read, not the chosen T
    sweep = {e["timesteps"]: e["mean_return"] for e in json.loads((run_dir / "eval.json").read_text())["sweep"]}
    assert max(sweep.values()) >= 0.9 * ann_return, (ann_return, sweep)


def test_int8_quantized_minatar_dqns_keep_95_percent_of_their_return(minatar_dqns, tmp_path):
    """The int8 baseline (converters/quantize.py) on the three DQNs: for at least two, it scores
    at least 95% of its own ANN's return on the same 100 evaluation episodes."""
    outcomes = {}
    for seed, source in minatar_dqns.items():
        run_dir = compare_run(tmp_path / str(seed), "--method", "quantize", "--source", str(source))
        outcomes[seed] = (final_return(run_dir), json.loads((run_dir / "eval.json").read_text())["ann_mean_return"])
    assert sum(q >= 0.95 * a for q, a in outcomes.values()) >= 2, outcomes
