import pytest

from compare.core.dqn import DQNConfig, get_dqn_preset
from compare.core.errors import UsageError
from compare.experiment import resolve_settings, start_run


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
    c = get_dqn_preset("chen2022")
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


def short_cartpole(tmp_path, name):
    settings = resolve_settings("dqn", "CartPole-v1", 7, 3000, "nature", None,
                                {"learning_starts": "500", "eval_episodes": "2", "mlp_hidden": "64,64",
                                 "train_freq": "64", "gradient_steps": "16"}, "cpu")
    return start_run(settings, tmp_path / name)


def test_same_seed_gives_identical_metrics(tmp_path):
    a, b = short_cartpole(tmp_path, "a"), short_cartpole(tmp_path, "b")
    timing = {"steps_per_s"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert len(a.metrics()) > 20
    assert any(r["loss"] is not None for r in a.metrics())
    assert strip(a.metrics()) == strip(b.metrics())
    assert a.read_eval()["episode_returns"] == b.read_eval()["episode_returns"]
