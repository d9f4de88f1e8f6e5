"""PPO: one actor-critic learner for every actor (ANN, spiking, anything registered later).

An actor maps an observation batch to (batch, n_actions) logits; a critic maps it to
(batch, 1) values. They are separate modules with no shared parameters, so a deployed actor
never depends on critic features; one Adam optimizer trains both. The loop, top to bottom
(Schulman et al. 2017; CleanRL's ppo_atari.py): collect `num_steps` steps from `num_envs`
environments, compute GAE advantages, then `update_epochs` passes of clipped-objective
minibatch updates with an entropy bonus and a (clipped) value loss.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from compare.config import unknown_name_message
from compare.dqn import training_signal
from compare.envs import VecEnv
from compare.errors import UsageError
from compare.evaluation import Policy, evaluate_policy
from compare.protocols import Protocol


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
    checkpoint_interval: int = 0      # agent steps between checkpoints; 0: ten per run

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "minibatch_size", "update_epochs"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.minibatch_size > self.rollout_size:
            raise UsageError(f"minibatch_size={self.minibatch_size} exceeds the rollout (num_envs x "
                             f"num_steps = {self.rollout_size}); lower it or collect more steps")
        if self.lr <= 0 or self.clip_coef <= 0:
            raise UsageError("lr and clip_coef must be positive")
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


def get_ppo_preset(name: str) -> PPOConfig:
    if name not in PPO_PRESETS:
        raise UsageError(unknown_name_message("preset", name, list(PPO_PRESETS)))
    return PPO_PRESETS[name]


def default_ppo_preset(family: str) -> str:
    return {"atari": "atari", "minatar": "atari", "classic": "cartpole"}[family]


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


def evaluate_actor(actor: nn.Module, spec, protocol: Protocol, episodes: int, seed: int,
                   device: torch.device):
    """The protocol's evaluation for an actor: `actor_eval=sample` draws actions from the policy
    with no extra epsilon (the PPO literature's convention); `greedy` takes the most probable
    action with the protocol's eval_epsilon, as the Q-methods do."""
    policy = actor_policy(actor, device, protocol.actor_eval, seed)
    epsilon = 0.0 if protocol.actor_eval == "sample" else None
    return evaluate_policy(policy, spec, protocol, episodes, seed, epsilon=epsilon)


@dataclass
class PPOState:
    step: int = 0
    episodes: int = 0
    updates: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0


class PPOLearner:
    """Trains `actor` and `critic` in `env`; `run` (a `compare.runstore.Run`) records everything."""

    def __init__(self, actor: nn.Module, critic: nn.Module, env: VecEnv, config: PPOConfig,
                 protocol: Protocol, total_steps: int, seed: int, device: torch.device, run, progress=None):
        shared = {id(p) for p in actor.parameters()} & {id(p) for p in critic.parameters()}
        if shared:
            raise ValueError("actor and critic must not share parameters")
        self.cfg, self.protocol, self.env = config, protocol, env
        self.total_steps, self.seed, self.device = total_steps, seed, device
        self.run, self.progress = run, progress
        self.actor, self.critic = actor.to(device), critic.to(device)
        self.params = [*self.actor.parameters(), *self.critic.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=config.lr, eps=config.adam_eps)
        self.state = PPOState(next_eval=protocol.eval_interval or total_steps + 1,
                              next_checkpoint=self.checkpoint_interval)

    @property
    def checkpoint_interval(self) -> int:
        return self.cfg.checkpoint_interval or max(1, self.total_steps // 10)

    def _fraction_left(self) -> float:
        return max(0.0, 1.0 - self.state.step / self.total_steps)

    # -- learning ---------------------------------------------------------------------------
    def loss(self, obs, actions, old_logprobs, advantages, returns, old_values, clip: float):
        """The PPO loss on one minibatch, and its parts for the log."""
        cfg = self.cfg
        dist = Categorical(logits=self.actor(obs))
        logprobs = dist.log_prob(actions)
        ratio = (logprobs - old_logprobs).exp()
        if cfg.norm_adv and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
        values = self.critic(obs).squeeze(-1)
        if cfg.clip_vloss:
            clipped = old_values + (values - old_values).clamp(-clip, clip)
            v_loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()
        else:
            v_loss = 0.5 * ((values - returns) ** 2).mean()
        entropy = dist.entropy().mean()
        total = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
        return total, {"pg_loss": pg_loss.item(), "v_loss": v_loss.item(), "entropy": entropy.item()}

    def _update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        frac = self._fraction_left()
        if cfg.lr_schedule == "linear":
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr * frac
        clip = cfg.clip_coef * (frac if cfg.clip_schedule == "linear" else 1.0)
        clip = max(clip, 1e-8)
        n = len(batch["actions"])
        parts: list[dict[str, float]] = []
        for _ in range(cfg.update_epochs):
            order = torch.randperm(n)
            for start in range(0, n - cfg.minibatch_size + 1, cfg.minibatch_size):
                idx = order[start:start + cfg.minibatch_size].to(self.device)
                loss, part = self.loss(*(batch[k][idx] for k in
                                         ("obs", "actions", "logprobs", "advantages", "returns", "values")), clip)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.opt.step()
                parts.append(part)
        return {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        self.run.save_checkpoint({
            "train_state": dataclasses.asdict(self.state), "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(), "optimizer": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state()})

    def load_checkpoint(self, payload: dict) -> None:
        self.actor.load_state_dict(payload["actor"])
        self.critic.load_state_dict(payload["critic"])
        self.opt.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])
        self.state = PPOState(**payload["train_state"])

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> None:
        cfg, st, env, dev = self.cfg, self.state, self.env, self.device
        obs = env.reset(seed=self.seed + st.step)  # a resumed run starts fresh episodes
        window = time.perf_counter(), st.step
        while st.step < self.total_steps:
            rollout = {k: [] for k in ("obs", "actions", "logprobs", "values", "rewards", "nonterminal")}
            finished = []
            for _ in range(cfg.num_steps):
                x = torch.as_tensor(obs, device=dev)
                with torch.no_grad():
                    dist = Categorical(logits=self.actor(x))
                    action = dist.sample()
                    value = self.critic(x).squeeze(-1)
                out = env.step(action.cpu().numpy())
                reward, terminal = training_signal(out, self.protocol)
                rollout["obs"].append(x)
                rollout["actions"].append(action)
                rollout["logprobs"].append(dist.log_prob(action))
                rollout["values"].append(value)
                rollout["rewards"].append(torch.as_tensor(reward, device=dev))
                rollout["nonterminal"].append(torch.as_tensor(1.0 - (terminal | out.done), device=dev,
                                                              dtype=torch.float32))
                obs = out.obs
                st.step += env.num_envs
                finished += [(st.step, score, length) for _, score, length in out.finished]
            with torch.no_grad():
                last_value = self.critic(torch.as_tensor(obs, device=dev)).squeeze(-1)
            stacked = {k: torch.stack(v) for k, v in rollout.items()}
            advantages, returns = gae(stacked["rewards"], stacked["values"], stacked["nonterminal"],
                                      last_value, cfg.gamma, cfg.gae_lambda)
            batch = {k: stacked[k].flatten(0, 1) for k in ("obs", "actions", "logprobs", "values")}
            batch["advantages"], batch["returns"] = advantages.flatten(0, 1), returns.flatten(0, 1)
            losses = self._update(batch)
            st.updates += 1

            now = time.perf_counter()
            steps_per_s = (st.step - window[1]) / max(now - window[0], 1e-9)
            window = now, st.step
            for step, score, length in finished:
                st.episodes += 1
                self.run.log_metric({"step": step, "frames": step * env.spec.frameskip, "episode": st.episodes,
                                     "episode_return": score, "episode_length": length, **losses,
                                     "steps_per_s": round(steps_per_s, 1)})
            if self.progress is not None:
                if finished:
                    self.progress.set_postfix(ret=f"{finished[-1][1]:.1f}", refresh=False)
                self.progress.update(min(st.step, self.total_steps) - self.progress.n)
            if st.step >= st.next_eval:
                result = self.evaluate(self.protocol.periodic_eval_episodes, seed_offset=st.step)
                self.run.log_eval({"step": st.step, "frames": st.step * env.spec.frameskip, **result.summary()})
                st.next_eval += self.protocol.eval_interval
            if st.next_checkpoint <= st.step < self.total_steps:
                st.next_checkpoint += self.checkpoint_interval
                self.save_checkpoint()
        self.run.save_weights({"actor": self.actor.state_dict(), "critic": self.critic.state_dict()})
        self.save_checkpoint()

    def evaluate(self, episodes: int, seed_offset: int = 0):
        self.actor.eval()
        try:
            return evaluate_actor(self.actor, self.env.spec, self.protocol, episodes,
                                  self.seed + 10_000 + seed_offset, self.device)
        finally:
            self.actor.train()
