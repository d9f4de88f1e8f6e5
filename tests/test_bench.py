import subprocess
import sys


def test_bench_reports_its_seven_figures():
    """The benchmark runs end to end (its numbers are measured, not asserted)."""
    proc = subprocess.run([sys.executable, "-m", "compare", "bench", "--env-steps", "200", "--train-steps", "100",
                           "--concurrent-steps", "1500", "--ppo-rollouts", "1", "--rounds", "1"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for tag in ("(a) env steps/s", "(b) DQN training steps/s", "(c) replay bytes per transition",
                "(d) training step", "(e) two CartPole DQN runs side by side",
                "(f) DQN training steps/s, MinAtar Breakout", "(g) PPO training steps/s"):
        assert any(line.startswith(tag) and "ratio" in line for line in lines), proc.stdout


def test_bench_refuses_a_non_atari_game():
    proc = subprocess.run([sys.executable, "-m", "compare", "bench", "--game", "CartPole-v1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "measures Atari games" in proc.stderr
