"""PPO: one actor-critic learner for every actor (ANN, spiking, anything registered later).

An actor maps an observation batch to (batch, n_actions) logits; a critic maps it to
(batch, 1) values. They are separate modules with no shared parameters, so a deployed actor
never depends on critic features; one Adam optimizer trains both. The ANN `ppo` baseline may
instead share the actor's trunk (`shared_trunk`, CleanRL's architecture): its critic is then one
linear output on the actor's last hidden layer, and trunk and heads run once per batch. The loop, top to bottom
(Schulman et al. 2017; CleanRL's ppo_atari.py): collect `num_steps` steps from `num_envs`
environments into preallocated storage, compute GAE advantages, then `update_epochs` passes of
clipped-objective minibatch updates with an entropy bonus and a (clipped) value loss. A
time-limit truncation is bootstrapped from the critic's value of the final observation
(Stable-Baselines3's rule; CleanRL treats it as a termination). Logged once per update, on the
episodes it finished: pg_loss, v_loss, entropy, approx_kl, clipfrac, explained_variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from compare.core.errors import UsageError
from compare.core.evaluation import Policy
from compare.core.learner import Learner, LearnerState, StepRate, linear_decay, training_signal
from compare.core.linear import Linear
from compare.core.networks import build_ann
from compare.core.protocols import Protocol


@dataclass(frozen=True)
class PPOConfig:
    num_envs: int = 8
    num_steps: int = 128              # rollout length per env; a rollout is num_envs x num_steps
    minibatch_size: int = 256
    update_epochs: int = 4
    lr: float = 2.5e-4
    lr_schedule: Literal["constant", "linear"] = "linear"  # linear: to 0 at the budget
    adam_eps: float = 1e-5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.1
    clip_schedule: Literal["constant", "linear"] = "constant"
    clip_vloss: bool = True
    norm_adv: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    checkpoint_interval: int = 0      # agent steps between checkpoints; 0: ten per run, >= 10k apart

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "minibatch_size", "update_epochs"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.minibatch_size > self.rollout_size:
            raise UsageError(f"minibatch_size={self.minibatch_size} exceeds the rollout (num_envs x "
                             f"num_steps = {self.rollout_size}); lower it or collect more steps")
        for name in ("lr", "clip_coef", "adam_eps", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be positive")
        for name in ("vf_coef", "ent_coef"):  # negative: the critic ascends its error, the policy shuns entropy
            if getattr(self, name) < 0:
                raise UsageError(f"{name}={getattr(self, name)} must be zero or positive")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        if self.checkpoint_interval < 0:
            raise UsageError(f"checkpoint_interval={self.checkpoint_interval} must be zero or positive")

    @property
    def rollout_size(self) -> int:
        return self.num_envs * self.num_steps


PPO_PRESETS: dict[str, PPOConfig] = {
    # Schulman et al. 2017, Atari, as in CleanRL's ppo_atari.py (clip 0.1, not annealed).
    "atari": PPOConfig(),
    # rl-baselines3-zoo's CartPole-v1 PPO (lr and clip annealed to 0; SB3 does not clip the
    # value loss: with it, the annealed clip froze the critic late in training and the hybrid
    # actor's return peaked at 230-380 and ended at 110-145, seeds 0 and 1, four settings).
    "cartpole": PPOConfig(num_envs=8, num_steps=32, minibatch_size=256, update_epochs=20, lr=1e-3,
                          gamma=0.98, gae_lambda=0.8, clip_coef=0.2, clip_schedule="linear", clip_vloss=False,
                          ent_coef=0.0),
}


def gae(rewards: torch.Tensor, values: torch.Tensor, nonterminal: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a (T, N) rollout. `nonterminal[t]` is 0 when step
    t ended the episode (or, under the protocol, a life), so nothing is bootstrapped across it.
    Returns (advantages, returns = advantages + values)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(len(rewards))):
        next_value = last_value if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_value * nonterminal[t] - values[t]
        running = delta + gamma * lam * nonterminal[t] * running
        advantages[t] = running
    return advantages, advantages + values


def actor_policy(actor: nn.Module, device: torch.device, mode: str, seed: int) -> Policy:
    """Evaluation policy: `sample` from the actor's distribution, or its `greedy` action."""
    generator = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = actor(torch.as_tensor(obs, device=device)).float().cpu()
        if mode == "greedy":
            return logits.argmax(dim=1).numpy()
        return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1).numpy()
    return act


class TrunkValueHead(nn.Module):
    """`shared_trunk`'s critic: one linear output on the ANN actor's last hidden layer (the Agent
    of CleanRL's ppo_atari.py). Its parameters are that output's alone: the actor's trunk is
    referred to, not owned, so the optimizer, checkpoints and cost counts see it once, as the
    actor's."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.head = Linear(actor.output_layer.in_features, 1)
        self._actor = (actor,)  # a tuple, so that nn.Module does not register it

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self._actor[0].features(obs))


@dataclass
class PPOState(LearnerState):
    updates: int = 0


class PPOLearner(Learner, key="ppo", config_type=PPOConfig, presets=PPO_PRESETS, deployed_role="actor",
                 family_presets={"atari": "atari", "minatar": "atari", "classic": "cartpole"},
                 state_type=PPOState):
    """Trains an actor and its ANN critic in `env`; `run` (a `compare.core.runstore.Run`)
    records everything. The method's options must have `critic_hidden` (the critic's widths
    for vector observations)."""

    @classmethod
    def networks(cls, network: nn.Module, options, family: str, obs_shape: tuple[int, ...]) -> dict[str, nn.Module]:
        """The actor and the ANN critic of every actor-critic method: the family's ANN with one
        output (`critic_hidden` widths for vector observations), used only in training; with
        `shared_trunk`, one linear output on the actor's last hidden layer."""
        if getattr(options, "shared_trunk", False):
            return {"actor": network, "critic": TrunkValueHead(network)}
        return {"actor": network, "critic": build_ann(family, obs_shape, 1, options.critic_hidden)}

    @classmethod
    def policy(cls, network: nn.Module, protocol: Protocol, device: torch.device,
               seed: int) -> tuple[Policy, float | None]:
        """`actor_eval=sample` draws actions from the policy with no extra epsilon (the PPO
        literature's convention); `greedy` takes the most probable action with the protocol's
        eval_epsilon, as the Q-methods do."""
        return actor_policy(network, device, protocol.actor_eval, seed), (
            0.0 if protocol.actor_eval == "sample" else None)

    def __init__(self, networks: dict[str, nn.Module], env, config: PPOConfig, protocol: Protocol,
                 total_steps: int, seed: int, device: torch.device, run, progress=None):
        actor, critic = networks["actor"], networks["critic"]
        if {id(p) for p in actor.parameters()} & {id(p) for p in critic.parameters()}:
            raise ValueError("actor and critic must not share parameters")
        super().__init__(networks, env, config, protocol, total_steps, seed, device, run, progress)
        self.actor, self.critic = self.networks["actor"], self.networks["critic"]
        self.shared_trunk = isinstance(self.critic, TrunkValueHead)
        self.params = [*self.actor.parameters(), *self.critic.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=config.lr, eps=config.adam_eps)
        self._rollout: dict[str, torch.Tensor] | None = None

    # -- learning ---------------------------------------------------------------------------
    def logits_and_values(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared_trunk:
            features = self.actor.features(obs)  # the trunk once for both heads
            return self.actor.output_layer(features), self.critic.head(features).squeeze(-1)
        return self.actor(obs), self.critic(obs).squeeze(-1)

    def loss(self, obs, actions, old_logprobs, advantages, returns, old_values, clip: float):
        """The PPO loss on one minibatch, and its parts and diagnostics for the log (tensors:
        the caller syncs once per update)."""
        cfg = self.cfg
        logits, values = self.logits_and_values(obs)
        dist = Categorical(logits=logits)
        logratio = dist.log_prob(actions) - old_logprobs
        ratio = logratio.exp()
        if cfg.norm_adv and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
        if cfg.clip_vloss:
            clipped = old_values + (values - old_values).clamp(-clip, clip)
            v_loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()
        else:
            v_loss = 0.5 * ((values - returns) ** 2).mean()
        entropy = dist.entropy().mean()
        total = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
        with torch.no_grad():  # CleanRL's diagnostics: the k3 estimate of KL(old || new), the clipped share
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfrac = ((ratio - 1).abs() > clip).float().mean()
        return total, {"pg_loss": pg_loss.detach(), "v_loss": v_loss.detach(), "entropy": entropy.detach(),
                       "approx_kl": approx_kl, "clipfrac": clipfrac}

    def _update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """`update_epochs` passes over the rollout; the log's means over its minibatches, and the
        critic's explained variance on the rollout (CleanRL's: values before the update)."""
        cfg, step = self.cfg, self.state.step
        if cfg.lr_schedule == "linear":
            for group in self.opt.param_groups:
                group["lr"] = linear_decay(cfg.lr, step, self.total_steps)
        clip = linear_decay(cfg.clip_coef, step, self.total_steps) if cfg.clip_schedule == "linear" else cfg.clip_coef
        clip = max(clip, 1e-8)
        n = len(batch["actions"])
        parts: list[dict[str, torch.Tensor]] = []
        for _ in range(cfg.update_epochs):
            order = torch.randperm(n, device=self.device)
            for start in range(0, n - cfg.minibatch_size + 1, cfg.minibatch_size):
                idx = order[start:start + cfg.minibatch_size]
                loss, part = self.loss(*(batch[k][idx] for k in
                                         ("obs", "actions", "logprobs", "advantages", "returns", "values")), clip)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.opt.step()
                parts.append(part)
        returns = batch["returns"]
        variances = torch.stack([returns.var(), (returns - batch["values"]).var()])
        means = torch.stack([torch.stack(list(p.values())) for p in parts]).mean(0)
        *logged, var_returns, var_residual = torch.cat([means, variances]).tolist()  # one sync per update
        return {**dict(zip(parts[0], logged)),  # undefined (null) when the returns do not vary
                "explained_variance": 1 - var_residual / var_returns if var_returns > 0 else None}

    # -- the loop ---------------------------------------------------------------------------
    def _rollout_storage(self, obs: np.ndarray) -> dict[str, torch.Tensor]:
        """Preallocated (num_steps, num_envs) storage on the device, filled in place by every rollout."""
        shape, dev = (self.cfg.num_steps, self.env.num_envs), self.device
        storage = {k: torch.zeros(shape, device=dev) for k in ("logprobs", "values", "rewards", "nonterminal")}
        storage["obs"] = torch.zeros(shape + obs.shape[1:], dtype=torch.as_tensor(obs).dtype, device=dev)
        storage["actions"] = torch.zeros(shape, dtype=torch.long, device=dev)
        return storage

    def collect_rollout(self) -> tuple[dict[str, torch.Tensor], list[tuple[int, float, int]], bool]:
        """`num_steps` steps of every env into the rollout storage. A time-limit truncation is
        bootstrapped from the value of the episode's final observation (SB3's rule: reward +=
        gamma * V(final)); a termination is not. Returns the storage (rewards as trained on), the
        episodes that finished and whether every env ended an episode on the last step."""
        cfg, st, env, dev = self.cfg, self.state, self.env, self.device
        if self._rollout is None:
            self._rollout = self._rollout_storage(self.obs)
        buf, obs, finished = self._rollout, self.obs, []
        for t in range(cfg.num_steps):
            buf["obs"][t] = torch.as_tensor(obs)  # the network reads its input from the storage
            x = buf["obs"][t]
            with torch.no_grad():
                logits, value = self.logits_and_values(x)
                dist = Categorical(logits=logits)
                action = dist.sample()
            out = env.step(action.cpu().numpy())
            reward, terminal = training_signal(out, self.protocol)
            truncated = out.truncated & ~terminal
            if truncated.any():
                with torch.no_grad():
                    final = self.critic(torch.as_tensor(out.final_obs[truncated], device=dev)).squeeze(-1)
                reward[truncated] += cfg.gamma * final.float().cpu().numpy()
            buf["actions"][t], buf["logprobs"][t], buf["values"][t] = action, dist.log_prob(action), value
            buf["rewards"][t] = torch.from_numpy(reward)
            buf["nonterminal"][t] = torch.from_numpy(~(terminal | out.done))
            obs = out.obs
            st.step += env.num_envs
            finished += [(st.step, score, length) for _, score, length in out.finished]
        self.obs = obs
        return buf, finished, bool(out.done.all())

    def train_until(self, limit: int) -> None:
        """Collect a rollout, update on it, repeat until `limit` agent steps."""
        cfg, st, dev = self.cfg, self.state, self.device
        rate = StepRate(st.step)
        while st.step < limit:
            rollout, finished, all_ended = self.collect_rollout()
            with torch.no_grad():
                last_value = self.critic(torch.as_tensor(self.obs, device=dev)).squeeze(-1)
            advantages, returns = gae(rollout["rewards"], rollout["values"], rollout["nonterminal"],
                                      last_value, cfg.gamma, cfg.gae_lambda)
            batch = {k: rollout[k].flatten(0, 1) for k in ("obs", "actions", "logprobs", "values")}
            batch["advantages"], batch["returns"] = advantages.flatten(0, 1), returns.flatten(0, 1)
            losses = self._update(batch)
            st.updates += 1
            self.log_episodes(finished, rate.update(st.step), **losses)
            self.on_schedule(episode_ended=all_ended)
