import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from compare.bench import WARMUP, KernelCapture, _bench_learner, flop_counter, update_flops, update_kernel_seconds
from compare.core.envs import resolve_env
from compare.core.protocols import get_protocol
from compare.core.runstore import Run


@pytest.mark.slow  # `make test-fast` leaves it out (minutes of subprocess runs)
def test_bench_reports_its_ten_figures():
    """The benchmark runs end to end (its numbers are measured, not asserted)."""
    proc = subprocess.run([sys.executable, "-m", "compare", "bench", "--env-steps", "200", "--train-steps", "100",
                           "--concurrent-steps", "1500", "--ppo-rollouts", "1", "--rounds", "1", "--decisions", "50"],
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
    assert floors.count(" ms, kernels ") == 4, floors
    (minatar,) = [line for line in lines if line.startswith("(f)")]
    assert "the updates' kernels alone take" in minatar, minatar


def test_the_kernel_floor_times_the_kernels_the_flop_count_counts():
    """The captured kernels of a MinAtar DQN update are the ones FlopCounterMode counts (their
    FLOPs, re-run from the copies, equal the update's); their time alone is measured, not
    asserted."""
    with tempfile.TemporaryDirectory() as tmp:
        learner = _bench_learner(resolve_env("MinAtar/Breakout"), get_protocol("youngtian2019"), 0, 1,
                                 Run(Path(tmp)), preset="youngtian2019")
        learner.begin()
        learner.train_until(WARMUP)
        with KernelCapture() as capture:
            learner.update_once()
        ops = sorted(str(func.overloadpacket) for func, _, _ in capture.calls)
        assert ops.count("aten.convolution") == 2 and ops.count("aten.convolution_backward") == 1, ops
        with flop_counter() as counter:
            for func, args, kwargs in capture.calls:
                func(*args, **kwargs)
        assert counter.get_total_flops() == update_flops(learner) > 0
        assert update_kernel_seconds(learner) > 0
        learner.env.close()


@pytest.mark.slow
def test_bench_refuses_a_non_atari_game():
    proc = subprocess.run([sys.executable, "-m", "compare", "bench", "--game", "CartPole-v1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "measures Atari games" in proc.stderr
