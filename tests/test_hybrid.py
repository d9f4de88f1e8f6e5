import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, compare, kill_and_resume

from compare.app.resolve import resolve_settings
from compare.core.envs import Step, VecEnv, resolve_env
from compare.core.ppo import PPO_PRESETS, PPOLearner, gae
from compare.core.registry import get_method
from compare.core.training import build_networks
from direct.hybrid import PopulationEncoder

SHORT = ["--game", "CartPole-v1", "--quiet", "--set", "eval_episodes=2"]


def test_population_encoder_on_a_hand_computed_input():
    encoder = PopulationEncoder(1, 3, -1.0, 1.0, std=1.0)
    assert encoder.mean.tolist() == [[-1.0, 0.0, 1.0]]
    a = encoder.stimulation(torch.tensor([[0.0]]))
    edge = math.exp(-0.5)  # (0 - (+-1))^2 / (2 * 1^2) = 0.5
    torch.testing.assert_close(a, torch.tensor([[edge, 1.0, edge]]))
    # IF encoder, threshold 0.999, subtract on spike. A = 1: a spike every step. A = 0.6065:
    # v = 0.607, 1.213 (spike -> 0.214), 0.820, 1.427 (spike) -> 0 1 0 1.
    spikes = encoder(torch.tensor([[0.0]]), timesteps=4)
    assert spikes.shape == (4, 1, 3)
    assert spikes[:, 0].tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0], [1, 1, 1]]


def test_gae_matches_a_hand_computed_example():
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    nonterminal = torch.tensor([[1.0], [0.0], [1.0]])  # the episode ends at step 1
    advantages, returns = gae(rewards, values, nonterminal, torch.tensor([0.2]), gamma=0.9, lam=0.8)
    # t=2: 1 + 0.9*0.2 - 0.3 = 0.88;  t=1: 1 - 0.4 = 0.6 (no bootstrap);
    # t=0: (1 + 0.9*0.4 - 0.5) + 0.9*0.8*0.6 = 0.86 + 0.432 = 1.292
    torch.testing.assert_close(advantages, torch.tensor([[1.292], [0.6], [0.88]]))
    torch.testing.assert_close(returns, torch.tensor([[1.792], [1.0], [1.18]]))


class ScriptedEnv:
    """Two CartPole-shaped envs whose every step is written out: observation t is all t; at step 1
    env 0 hits a time limit (its final observation all 5) and env 1 terminates."""

    num_envs = 2

    def __init__(self):
        self.t = 0

    def step(self, actions):
        self.t += 1
        ended = np.array([self.t == 2, self.t == 2])
        return Step(np.full((2, 4), float(self.t), dtype=np.float32), np.ones(2), terminated=ended & [False, True],
                    truncated=ended & [True, False], life_lost=np.zeros(2, dtype=bool),
                    final_frame=np.zeros((2, 4), dtype=np.float32),
                    final_obs=np.full((2, 4), 5.0, dtype=np.float32) if ended.any() else None)


def test_a_truncated_episode_is_bootstrapped_from_its_final_observation_and_a_terminated_one_is_not():
    """SB3's rule on a hand-made rollout: the truncated step's reward becomes r + gamma * V(final)."""
    critic = torch.nn.Linear(4, 1)
    torch.nn.init.ones_(critic.weight), torch.nn.init.zeros_(critic.bias)  # V(obs) = sum(obs): V(final) = 20
    settings = resolve_settings("ppo", "CartPole-v1", 0, 100, "nature", None, {}, "cpu")
    config = dataclasses.replace(PPO_PRESETS["cartpole"], num_envs=2, num_steps=3, minibatch_size=2)
    learner = PPOLearner({"actor": torch.nn.Linear(4, 2), "critic": critic}, ScriptedEnv(), config,
                         settings.protocol, 100, 0, torch.device("cpu"), run=None)
    learner.obs = np.zeros((2, 4), dtype=np.float32)
    rollout, finished, all_ended = learner.collect_rollout()
    gamma = config.gamma
    torch.testing.assert_close(rollout["rewards"], torch.tensor([[1.0, 1.0], [1 + gamma * 20, 1.0], [1.0, 1.0]]))
    assert rollout["nonterminal"].tolist() == [[1, 1], [0, 0], [1, 1]]  # nothing bootstrapped across a reset
    torch.testing.assert_close(rollout["values"], torch.tensor([[0.0, 0.0], [4.0, 4.0], [8.0, 8.0]]))
    assert rollout["obs"][2].tolist() == [[2.0] * 4] * 2 and learner.obs.tolist() == [[3.0] * 4] * 2
    assert learner.state.step == 6 and not all_ended and finished == []
    advantages, _ = gae(rollout["rewards"], rollout["values"], rollout["nonterminal"], torch.zeros(2),
                        gamma=gamma, lam=0.0)
    torch.testing.assert_close(advantages[1], torch.tensor([1 + gamma * 20 - 4.0, 1 - 4.0]))


def networks(method, game, **overrides):
    settings = resolve_settings(method, game, 0, 100, "nature", None, overrides, "cpu")
    env = VecEnv(resolve_env(game), settings.protocol, 2)
    obs = env.reset(seed=0)
    nets = build_networks(get_method(method), settings, resolve_env(game), env.obs_shape, env.n_actions)
    return settings, env, obs, nets


@pytest.mark.parametrize("method, game", [("hybrid", "CartPole-v1"), ("hybrid", "Breakout"), ("ppo", "CartPole-v1")])
def test_ppo_loss_gradients_reach_the_actors_first_layer_and_nets_share_nothing(method, game):
    settings, env, obs, nets = networks(method, game)
    try:
        actor, critic = nets["actor"], nets["critic"]
        assert not {id(p) for p in actor.parameters()} & {id(p) for p in critic.parameters()}
        learner = PPOLearner(nets, env, settings.learner, settings.protocol, 100, 0, torch.device("cpu"), run=None)
        x = torch.as_tensor(obs)
        with torch.no_grad():
            old_logprobs = torch.log_softmax(actor(x), 1)[:, 0] - 0.1
        loss, parts = learner.loss(x, torch.zeros(2, dtype=torch.long), old_logprobs,
                                   torch.tensor([1.0, -0.5]), torch.tensor([1.0, 2.0]), torch.zeros(2), clip=0.2)
        loss.backward()
        first = actor.synapses[0] if method == "hybrid" else actor.net[0]
        assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
        if method == "hybrid" and game == "CartPole-v1":
            assert actor.encoder.mean.grad.abs().sum() > 0  # the receptive fields learn too
        with pytest.raises(ValueError, match="share"):
            PPOLearner({"actor": actor, "critic": actor}, env, settings.learner, settings.protocol, 100, 0,
                       torch.device("cpu"), None)
    finally:
        env.close()


@pytest.mark.parametrize("game", ["CartPole-v1", "Breakout"])
def test_a_shared_trunk_critic_is_one_output_on_the_actors_last_hidden_layer(game):
    """`ppo --set shared_trunk=true` (CleanRL's Agent): the critic owns only its output layer,
    the learner runs the trunk once for both heads with the same values as each network alone,
    and the value loss trains the actor's trunk."""
    settings, env, obs, nets = networks("ppo", game, shared_trunk="true")
    try:
        actor, critic = nets["actor"], nets["critic"]
        width = actor.output_layer.in_features
        assert [p.numel() for p in critic.parameters()] == [width, 1]
        learner = PPOLearner(nets, env, settings.learner, settings.protocol, 100, 0, torch.device("cpu"), run=None)
        x = torch.as_tensor(obs)
        logits, values = learner.logits_and_values(x)
        torch.testing.assert_close(logits, actor(x))
        torch.testing.assert_close(values, critic(x).squeeze(-1))
        values.sum().backward()
        assert actor.net[0].weight.grad.abs().sum() > 0 and actor.output_layer.weight.grad is None
    finally:
        env.close()


@pytest.mark.parametrize("args, fragments", [
    (["--method", "hybrid", "--set", "shared_trunk=true"], ["unknown setting for hybrid 'shared_trunk'"]),
    (["--method", "hybrid", "--timesteps", "0"], ["timesteps=0", "positive"]),
    (["--method", "hybrid", "--set", "pop_sizes=3"], ["unknown setting for hybrid 'pop_sizes'", "pop_size"]),
    (["--method", "ppo", "--set", "minibatch_size=4096"], ["minibatch_size=4096 exceeds the rollout", "256"]),
    (["--method", "hybrid", "--set", "decoder=spikes"], ["decoder='spikes'", "rate, membrane"]),
])
def test_bad_actor_critic_input(args, fragments):
    assert_clean_error(compare("run", "--game", "CartPole-v1", *args), *fragments)


@pytest.mark.slow
def test_ppo_run_is_reproducible_and_records_its_config(tmp_path):
    results = []
    for name in ("a", "b"):
        res = compare("run", "--method", "ppo", *SHORT, "--steps", "1024", "--out", tmp_path / name)
        assert res.returncode == 0, res.stderr
        run_dir = next((tmp_path / name).glob("runs/*"))
        results.append(json.loads((run_dir / "eval.json").read_text()))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["ppo"] == dataclasses.asdict(PPO_PRESETS["cartpole"]) and config["protocol"]["actor_eval"] == "sample"
    assert results[0]["episode_returns"] == results[1]["episode_returns"]
    assert results[0]["critic_neuro_training_only"]["macs_per_decision"] > 0


@pytest.mark.slow
def test_killed_ppo_run_resumes_from_its_checkpoint_and_ends_as_if_never_killed(tmp_path):
    args = ["run", "--method", "ppo", *SHORT, "--steps", "12000", "--set", "checkpoint_interval=2000"]
    _, result = kill_and_resume(args, tmp_path, exact=True)
    assert result["step"] == 12000
