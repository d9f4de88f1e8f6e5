import numpy as np
import pytest

from compare.core.envs import VecEnv, resolve_env
from compare.core.errors import UsageError
from compare.core.learner import training_signal
from compare.core.protocols import Protocol, get_protocol


@pytest.mark.parametrize("name, shape, dtype", [
    ("Breakout", (3, 4, 84, 84), np.uint8),
    ("CartPole-v1", (3, 4), np.float32),
    ("MinAtar/Breakout", (3, 4, 10, 10), np.uint8),
])
def test_observation_shapes_and_dtypes(name, shape, dtype):
    env = VecEnv(resolve_env(name), get_protocol("nature"), num_envs=3)
    obs = env.reset(seed=0)
    assert obs.shape == shape and obs.dtype == dtype
    out = env.step(np.zeros(3, dtype=np.int64))
    assert out.obs.shape == shape and out.obs.dtype == dtype
    env.close()


def test_atari_stack_shifts_one_frame_per_step_and_restarts_with_episodes():
    env = VecEnv(resolve_env("Breakout"), get_protocol("nature"), num_envs=2)
    obs = env.reset(seed=0)
    # A new episode shows its first frame four times.
    assert all((obs[:, i] == obs[:, 3]).all() for i in range(3))
    rng = np.random.default_rng(0)
    restarts = 0
    for _ in range(600):
        out = env.step(rng.integers(env.n_actions, size=2))
        for e in range(2):
            if out.done[e]:
                restarts += 1
                assert all((out.obs[e, i] == out.obs[e, 3]).all() for i in range(3))
                # The episode's last network input: its stack shifted by one, ending on the final frame.
                np.testing.assert_array_equal(out.final_obs[e, :3], obs[e, 1:])
                np.testing.assert_array_equal(out.final_obs[e, 3], out.final_frame[e])
            else:
                np.testing.assert_array_equal(out.obs[e, :3], obs[e, 1:])
        assert (out.final_obs is None) == (not out.done.any())
        obs = out.obs
    assert restarts >= 1
    env.close()


def test_training_reward_is_clipped_while_the_score_is_not():
    """Space Invaders pays 5 to 30 points per alien: the learner sees +1, the score the points."""
    protocol = get_protocol("nature")
    env = VecEnv(resolve_env("SpaceInvaders"), protocol, num_envs=2)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    raw_total, finished = 0.0, []
    for _ in range(1500):
        out = env.step(rng.integers(env.n_actions, size=2))
        reward, _ = training_signal(out, protocol)
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        np.testing.assert_array_equal(reward, np.sign(out.reward))
        raw_total += out.reward.sum()
        finished += out.finished
        if finished:
            break
    env.close()
    assert raw_total >= 5  # real points, not clipped ones
    assert finished and finished[0][1] >= 5 and finished[0][1] % 5 == 0
    unclipped = training_signal(out, Protocol(name="x", clip_rewards=False))[0]
    np.testing.assert_array_equal(unclipped, out.reward)


def test_life_loss_ends_bootstrapping_only_when_the_protocol_says_so():
    env = VecEnv(resolve_env("Breakout"), get_protocol("nature"), num_envs=2)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(500):
        out = env.step(rng.integers(env.n_actions, size=2))
        if out.life_lost.any():
            break
    env.close()
    lost = out.life_lost & ~out.done
    assert lost.any()
    assert training_signal(out, get_protocol("nature"))[1][lost].all()
    assert not training_signal(out, get_protocol("machado"))[1][lost].any()


@pytest.mark.parametrize("name, canonical", [
    ("Pong", "Pong"), ("ALE/Pong-v5", "Pong"), ("space_invaders", "SpaceInvaders"),
    ("PongNoFrameskip-v4", "Pong"), ("CartPole-v1", "CartPole-v1"),
    ("MinAtar/SpaceInvaders", "MinAtar/SpaceInvaders"), ("MinAtar/Breakout-v1", "MinAtar/Breakout"),
])
def test_game_names_resolve(name, canonical):
    assert resolve_env(name).name == canonical


def test_unknown_game_lists_the_closest_names():
    with pytest.raises(UsageError, match=r"unknown game 'Breakot'.*closest: Breakout"):
        resolve_env("Breakot")


def test_protocol_presets_are_what_their_papers_say():
    nature, machado, a100k = (get_protocol(n) for n in ("nature", "machado", "atari100k"))
    assert (nature.sticky_action_prob, nature.life_loss_terminal, nature.eval_epsilon,
            nature.eval_episodes, nature.max_episode_frames) == (0.0, True, 0.05, 30, 108_000)
    assert machado.sticky_action_prob == 0.25 and not machado.life_loss_terminal
    assert a100k.atari_budget_steps == 100_000 and a100k.eval_episodes == 100
    assert resolve_env("Pong").budget(a100k) == 100_000
    assert resolve_env("CartPole-v1").budget(a100k) == 50_000
