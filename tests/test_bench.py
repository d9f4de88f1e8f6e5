import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)


def test_bench_reports_its_ten_figures():
    """The benchmark runs end to end (its numbers are measured, not asserted)."""
    proc = subprocess.run([sys.executable, "-m", "compare", "bench", "--env-steps", "200", "--train-steps", "100",
                           "--concurrent-steps", "1500", "--ppo-rollouts", "1", "--rounds", "1"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for tag in ("(a) env steps/s", "(b) DQN training steps/s", "(c) replay bytes per transition",
                "(d) training step", "(e) two CartPole DQN runs side by side",
                "(f) MinAtar Breakout training steps/s", "(g) PPO training steps/s",
                "(h) one update against its arithmetic floor", "(j) cost accounting on an evaluation"):
        assert any(line.startswith(tag) and "ratio" in line for line in lines), proc.stdout
    (study,) = [line for line in lines if line.startswith("(i) studies/minatar.toml at 1M agent steps per run")]
    assert "core-hours" in study and all(f"{name} " in study for name in ("dqn", "dsqn", "ppo", "hybrid")), study
    (floors,) = [line for line in lines if line.startswith("(h)")]
    for name in ("MinAtar dqn", "MinAtar dsqn", "Atari dqn", "Atari dsqn"):
        assert f"{name} " in floors, floors


def test_bench_refuses_a_non_atari_game():
    proc = subprocess.run([sys.executable, "-m", "compare", "bench", "--game", "CartPole-v1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "measures Atari games" in proc.stderr
