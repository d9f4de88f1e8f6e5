import dataclasses
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from compare.app.resolve import resolve_settings
from compare.core.dqn import DQN_PRESETS, DQNConfig, DQNLearner, td_target
from compare.core.envs import VecEnv, resolve_env
from compare.core.errors import UsageError
from compare.core.registry import get_method


def test_epsilon_decays_linearly_then_stays():
    cfg = DQNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=1000)
    assert cfg.epsilon(0, 10_000) == 1.0
    assert cfg.epsilon(500, 10_000) == pytest.approx(0.55)
    assert cfg.epsilon(1000, 10_000) == pytest.approx(0.1)
    assert cfg.epsilon(5000, 10_000) == pytest.approx(0.1)


def test_epsilon_decay_as_a_fraction_of_the_budget():
    cfg = DQNConfig(epsilon_start=1.0, epsilon_end=0.01, exploration_fraction=0.1)
    assert cfg.epsilon(50_000, 1_000_000) == pytest.approx(1.0 - 0.5 * 0.99)
    assert cfg.epsilon(100_000, 1_000_000) == pytest.approx(0.01)


def test_chen2022_preset_matches_the_dsqn_paper():
    c = DQN_PRESETS["chen2022"]
    assert (c.optimizer, c.lr, c.loss, c.gamma, c.buffer_size, c.learning_starts,
            c.target_update_period, c.batch_size, c.train_freq) == (
        "adam", 2.5e-4, "mse", 0.99, 1_000_000, 50_000, 10_000, 128, 4)
    assert (c.epsilon_start, c.epsilon_end, c.epsilon_decay_steps) == (1.0, 0.1, 1_000_000)


def test_overrides_reach_the_right_config_object():
    s = resolve_settings("dqn", "CartPole-v1", 0, 100, "nature", None,
                         {"lr": "1e-3", "eval_episodes": "3", "mlp_hidden": "32,32",
                          "double_dqn": "true"}, "cpu")
    assert s.learner.lr == 1e-3 and s.learner.double_dqn is True
    assert s.protocol.eval_episodes == 3 and s.options.mlp_hidden == (32, 32)
    assert s.preset == "cartpole"


@pytest.mark.parametrize("overrides, message", [
    ({"lr": "fast"}, "not a number"),
    ({"loss": "l3"}, "choose one of: huber, mse"),
    ({"batch_size": "0"}, "must be a positive integer"),
    ({"nope": "1"}, "unknown setting"),
])
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(UsageError, match=message):
        resolve_settings("dqn", "CartPole-v1", 0, 100, "nature", None, overrides, "cpu")


def short_cartpole(tmp_path, name, **overrides):
    settings = resolve_settings("dqn", "CartPole-v1", 7, 3000, "nature", None,
                                {"learning_starts": "500", "eval_episodes": "2", "mlp_hidden": "64,64",
                                 "train_freq": "64", "gradient_steps": "16", **overrides}, "cpu")
    return get_method("dqn").start(settings, tmp_path / name)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


@pytest.mark.parametrize("overlap", ["false", "true"])
def test_same_seed_gives_identical_metrics(tmp_path, overlap):
    """Also with the training phases in a second thread: what it computes does not depend on
    when the thread runs."""
    a, b = (short_cartpole(tmp_path, name, overlap_updates=overlap) for name in "ab")
    assert len(a.metrics()) > 20
    assert any(r["loss"] is not None for r in a.metrics())
    assert without_timing(a.metrics()) == without_timing(b.metrics())
    assert a.read_eval()["episode_returns"] == b.read_eval()["episode_returns"]


def test_overlapped_updates_are_the_serial_loops_updates(tmp_path):
    """With every action random the acting network is never asked, so the only difference
    overlap_updates may make (acting one training phase behind) vanishes: the same transitions,
    batches, updates, losses and final weights as the serial loop. With greedy actions the two
    runs part ways, as the staleness says they must."""
    random_acting = {"epsilon_start": "1.0", "epsilon_end": "1.0"}
    serial = short_cartpole(tmp_path, "serial", **random_acting)
    overlapped = short_cartpole(tmp_path, "overlapped", overlap_updates="true", **random_acting)
    assert without_timing(serial.metrics()) == without_timing(overlapped.metrics())
    assert any(r["loss"] is not None for r in serial.metrics())
    for name, weight in serial.load_weights().items():
        assert torch.equal(weight, overlapped.load_weights()[name]), name
    greedy_serial = short_cartpole(tmp_path, "greedy-serial")
    greedy_overlapped = short_cartpole(tmp_path, "greedy-overlapped", overlap_updates="true")
    assert without_timing(greedy_serial.metrics()) != without_timing(greedy_overlapped.metrics())


def test_td_target_stops_bootstrapping_at_terminals():
    rewards, terminals = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([[2.0, 5.0], [7.0, 3.0], [-1.0, -4.0]])
    # r + 0.9 * max_a Q(s', a), except where terminal: 1 + 4.5, -1, 0.5 - 0.9
    torch.testing.assert_close(td_target(rewards, terminals, next_q, None, 0.9), torch.tensor([5.5, -1.0, -0.4]))


def test_double_dqn_takes_the_action_from_the_online_net_and_its_value_from_the_target():
    rewards, terminals = torch.zeros(2), torch.zeros(2)
    target_q = torch.tensor([[2.0, 5.0], [7.0, 3.0]])
    online_q = torch.tensor([[9.0, 0.0], [0.0, 9.0]])  # prefers action 0, then action 1
    torch.testing.assert_close(td_target(rewards, terminals, target_q, online_q, 1.0), torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(td_target(rewards, terminals, target_q, None, 1.0), torch.tensor([5.0, 7.0]))


def test_learning_rate_decays_linearly_to_zero_at_the_budget():
    settings = resolve_settings("dqn", "CartPole-v1", 0, 1000, "nature", None,
                                {"mlp_hidden": "16", "batch_size": "8", "lr": "0.01"}, "cpu")
    assert settings.learner.lr_schedule == "linear"  # the cartpole preset's
    env = VecEnv(resolve_env("CartPole-v1"), settings.protocol, 1)
    try:
        env.reset(seed=0)
        net = get_method("dqn").build_network(settings.options, "classic", env.obs_shape, env.n_actions)
        learner = DQNLearner({"q": net}, env, settings.learner, settings.protocol, 1000, 0,
                             torch.device("cpu"), run=None)
        learner.begin()
        for _ in range(20):  # a few random transitions to update on
            obs = learner.obs
            actions = np.array([env.n_actions - 1])
            out = env.step(actions)
            learner.replay.add(obs, actions, out.reward.astype(np.float32), out.terminated, out.done,
                               out.final_frame)
            learner.obs = out.obs
        rates = []
        for step in (0, 250, 1000):
            learner.state.step = step
            learner.update_once()
            rates.append(learner.opt.param_groups[0]["lr"])
        assert rates == pytest.approx([0.01, 0.0075, 0.0])
    finally:
        env.close()


def test_a_replay_ratio_past_any_published_one_is_announced_with_its_update_count():
    """gradient_steps=1e9 would hang the run at its first training phase: it is said at once."""
    huge = dataclasses.replace(DQNLearner.preset("cartpole"), gradient_steps=10**9)
    (warning,) = DQNLearner.setting_warnings(huge, 50_000)
    phases = (50_000 - huge.learning_starts) // huge.train_freq + 1
    assert "updates per agent step" in warning and f"makes {phases * 10**9:,} updates" in warning
    for name in DQNLearner.presets:
        assert DQNLearner.setting_warnings(DQNLearner.preset(name), 10**7) == [], name


def test_a_cuda_run_asks_cudnn_for_deterministic_kernels(monkeypatch):
    """Set before any work (no GPU needed to check the flags): same seed, same GPU, same result."""
    from compare.core.settings import use_compute_settings

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # this process keeps its threads
    settings = resolve_settings("dqn", "CartPole-v1", 0, 100, "nature", None, {}, "cpu")
    use_compute_settings(settings)
    assert torch.backends.cudnn.benchmark  # a CPU run leaves them
    use_compute_settings(dataclasses.replace(settings, device="cuda"))
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_a_run_with_a_billion_updates_per_phase_says_how_long_it_takes(tmp_path):
    """The announced update count becomes a duration once the first updates are timed (the run
    goes on; this test stops it)."""
    args = ["run", "--game", "CartPole-v1", "--steps", "2000", "--set", "learning_starts=300", "--set",
            "train_freq=100", "--set", "gradient_steps=1000000000", "--threads", "1", "--quiet", "--out", tmp_path]
    proc = subprocess.Popen([sys.executable, "-m", "compare", *map(str, args)], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 300  # the quiet time is a few seconds: a hang guard only
        while time.monotonic() < deadline and not any("updates take about" in line for line in lines):
            lines.append(proc.stderr.readline())
            if not lines[-1]:  # the run ended
                break
    finally:
        proc.kill()
        proc.wait()
    (estimate,) = [line for line in lines if "updates take about" in line]
    assert f"this run's {18 * 10**9:,} updates take about" in estimate and " days " in estimate


def test_a_checkpoint_holds_the_cuda_rng_field_and_a_cuda_resume_restores_it(monkeypatch):
    """Empty on a CPU run; a CUDA run's state is put back on resume (no GPU here: the device is
    only named, and torch.cuda's setter is watched)."""
    settings = resolve_settings("dqn", "CartPole-v1", 0, 1000, "nature", None, {"mlp_hidden": "16"}, "cpu")
    env = VecEnv(resolve_env("CartPole-v1"), settings.protocol, 1)
    saved = {}

    class Run:
        def save_checkpoint(self, payload):
            saved.update(payload)

        def record(self, **facts):
            pass

    try:
        env.reset(seed=0)
        net = get_method("dqn").build_network(settings.options, "classic", env.obs_shape, env.n_actions)
        learner = DQNLearner({"q": net}, env, dataclasses.replace(settings.learner, save_replay="never"),
                             settings.protocol, 1000, 0, torch.device("cpu"), run=Run())
        learner.begin()
        learner.save_checkpoint()
        assert saved["cuda_rng"].dtype == torch.uint8 and saved["cuda_rng"].numel() == 0
        restored = []
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
        learner.load_checkpoint(saved)  # a CPU resume of a CPU run: nothing to restore
        learner.device = torch.device("cuda")
        learner.load_checkpoint(saved)  # a CUDA resume of a checkpoint written on a CPU: nothing either
        learner.load_checkpoint({**saved, "cuda_rng": torch.arange(8, dtype=torch.uint8)})
        assert len(restored) == 1 and torch.equal(restored[0][0], torch.arange(8, dtype=torch.uint8))
    finally:
        env.close()
