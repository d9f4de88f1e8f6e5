"""DQN: one learner for every Q-network (ANN, DSQN, anything registered later).

A Q-network is any `nn.Module` mapping an observation batch to (batch, n_actions) Q-values.
The loop below is the whole algorithm, top to bottom: act epsilon-greedily, store the step,
update from replay every `train_freq` agent steps, copy the target every
`target_update_period`, evaluate and checkpoint on schedule.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compare.core.errors import UsageError
from compare.core.evaluation import Policy, greedy_q_policy
from compare.core.learner import Learner, LearnerState, StepRate, linear_decay, training_signal
from compare.core.optim import FlatRMSprop
from compare.core.protocols import Protocol
from compare.core.replay import Batch, ReplayBuffer
from compare.core.seeding import stream_seed


@dataclass(frozen=True)
class DQNConfig:
    num_envs: int = 1                 # envs stepped together; updates stay per agent step
    buffer_size: int = 1_000_000      # transitions
    batch_size: int = 32
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr: float = 1e-4
    lr_schedule: Literal["constant", "linear"] = "constant"  # linear: decays to 0 at the budget
    optimizer_eps: float = 1e-8       # Adam epsilon, or RMSProp's min squared gradient
    optimizer_momentum: float = 0.0   # RMSProp only: torch's heavy-ball momentum
    gamma: float = 0.99
    loss: Literal["huber", "mse"] = "mse"
    max_grad_norm: float = 0.0        # 0: no clipping
    double_dqn: bool = False
    learning_starts: int = 80_000     # agent steps of random-policy warm-up before updates
    train_freq: int = 4               # agent steps between training phases
    gradient_steps: int = 1           # updates per training phase
    target_update_period: int = 1_000  # agent steps between target-network copies
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay_steps: int = 0      # linear decay length in agent steps; 0: use the fraction
    epsilon_from_learning_starts: bool = False  # True: the decay starts at learning_starts (Young & Tian)
    exploration_fraction: float = 0.10  # decay length as a fraction of the budget
    checkpoint_interval: int = 0      # agent steps between checkpoints; 0: ten per run, >= 10k apart
    save_replay: Literal["auto", "always", "never"] = "auto"  # auto: when it is under 1 GiB
    # device: the replay's frames also kept on the run's device, batches gathered there (no
    # frames cross the bus); auto: on a CUDA device when they take at most half its free memory.
    # The choice is recorded in config.json (`replay_on_device`).
    replay_device: Literal["auto", "host", "device"] = "auto"
    # True: each training phase runs in a second thread while the agent takes its next
    # train_freq steps, acting with the network as it was before that phase (one phase stale);
    # False: the exact serial loop. Same transitions, batches and update schedule either way.
    overlap_updates: bool = False

    def __post_init__(self):
        positive = ("num_envs", "buffer_size", "batch_size", "train_freq", "gradient_steps",
                    "target_update_period")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be a positive integer")
        for name in ("learning_starts", "epsilon_decay_steps", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name}={getattr(self, name)} must be zero or positive")
        if self.lr <= 0:
            raise UsageError(f"lr={self.lr} must be positive")
        if self.optimizer_eps <= 0:
            raise UsageError(f"optimizer_eps={self.optimizer_eps} must be positive")
        if self.max_grad_norm < 0:
            raise UsageError(f"max_grad_norm={self.max_grad_norm} must be positive, or 0 for no clipping")
        if not 0 <= self.gamma <= 1:
            raise UsageError(f"gamma={self.gamma} must lie in [0, 1]")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"{name}={getattr(self, name)} must lie in [0, 1]")
        if not 0 <= self.optimizer_momentum < 1:
            raise UsageError(f"optimizer_momentum={self.optimizer_momentum} must lie in [0, 1)")
        if self.optimizer_momentum and self.optimizer != "rmsprop":
            raise UsageError("optimizer_momentum is RMSProp's; with optimizer=adam leave it at 0")
        if not 0 < self.exploration_fraction <= 1:
            raise UsageError(f"exploration_fraction={self.exploration_fraction} must lie in (0, 1]")
        if self.batch_size > self.buffer_size:
            raise UsageError(f"batch_size={self.batch_size} exceeds buffer_size={self.buffer_size}")

    def epsilon(self, step: int, total_steps: int) -> float:
        """Linear decay from epsilon_start to epsilon_end (from step 0, or from learning_starts),
        then constant."""
        decay = self.epsilon_decay_steps or max(1, int(self.exploration_fraction * total_steps))
        if self.epsilon_from_learning_starts:
            step = max(0, step - self.learning_starts)
        frac = min(1.0, step / decay)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)


DQN_PRESETS: dict[str, DQNConfig] = {
    # Mnih et al. 2015 (their RMSProp: lr 2.5e-4, squared-gradient momentum 0.95, min 0.01).
    "nature": DQNConfig(optimizer="rmsprop", lr=2.5e-4, optimizer_eps=0.01, loss="huber",
                        learning_starts=50_000, target_update_period=10_000,
                        epsilon_end=0.1, epsilon_decay_steps=1_000_000),
    # Chen et al. 2022, DSQN reference code: Adam, MSE, batch 128 every 4 steps.
    "chen2022": DQNConfig(lr=2.5e-4, batch_size=128, loss="mse", learning_starts=50_000,
                          target_update_period=10_000, epsilon_end=0.1,
                          epsilon_decay_steps=1_000_000),
    # Liu et al. 2022 (IEEE TCYB): Adam 1e-4, SmoothL1 (Huber).
    "liu2022": DQNConfig(lr=1e-4, loss="huber", learning_starts=50_000,
                         target_update_period=10_000, epsilon_end=0.1,
                         epsilon_decay_steps=1_000_000),
    # CleanRL dqn_atari.py defaults.
    "cleanrl": DQNConfig(),
    # Young & Tian 2019, MinAtar DQN, as their examples/dqn.py runs it: centered RMSProp (lr
    # 2.5e-4, alpha 0.95, eps 0.01) with no heavy-ball momentum (the script's GRAD_MOMENTUM was
    # never passed to the optimizer and was removed as dead code in MinAtar PR #37), Huber, batch
    # 32, replay 100k from 5k, one update per step, target copied every 1,000, epsilon 1 -> 0.1
    # over 100k steps after the replay start. Use with `--protocol youngtian2019`.
    "youngtian2019": DQNConfig(optimizer="rmsprop", lr=2.5e-4, optimizer_eps=0.01, loss="huber",
                               buffer_size=100_000, learning_starts=5_000, train_freq=1,
                               target_update_period=1_000, epsilon_end=0.1, epsilon_decay_steps=100_000,
                               epsilon_from_learning_starts=True),
    # This project's MinAtar default: Young & Tian's settings with two deviations, RMSProp
    # momentum 0.95 (it learned faster in this project's 30k-40k-step MinAtar runs) and epsilon
    # decaying from step 0; with the `nature` protocol (no sticky actions, minimal action set).
    "minatar": DQNConfig(optimizer="rmsprop", lr=2.5e-4, optimizer_eps=0.01, optimizer_momentum=0.95, loss="huber",
                         buffer_size=100_000, learning_starts=5_000, train_freq=1,
                         target_update_period=1_000, epsilon_end=0.1,
                         epsilon_decay_steps=100_000),
    # rl-baselines3-zoo's CartPole-v1 DQN, with the learning rate decayed to 0, so that the final
    # policy (what gets evaluated and converted) stops changing late in the run. It is not stable
    # across seeds: docs/methods/dqn.md gives the measured spread, and the learning tests count seeds.
    "cartpole": DQNConfig(lr=2.3e-3, lr_schedule="linear", batch_size=64, buffer_size=100_000,
                          learning_starts=1_000, train_freq=256, gradient_steps=128,
                          target_update_period=256, loss="huber", max_grad_norm=10.0,
                          epsilon_end=0.04, exploration_fraction=0.16),
}


# Updates per agent step beyond which a setting is more likely a typo than an experiment. A
# judgement, not a published bound: replay-ratio studies (D'Oro et al. 2023) go "an order of
# magnitude" past the usual 1 or less; the presets here make at most 1.
MAX_REPLAY_RATIO = 128
ESTIMATE_AFTER = 32  # updates timed before a run with more than MAX_REPLAY_RATIO says how long it takes

# One learner per study: every Q-method on a family trains with that family's preset. Atari:
# Chen et al.'s, under which the paper that defines `dsqn` trained both its DSQN and its DQN
# baseline (Nature's RMSProp settings were tuned for the ANN alone; `--preset nature` has them).
DQN_FAMILY_PRESETS = {"atari": "chen2022", "minatar": "minatar", "classic": "cartpole"}


def td_target(rewards: torch.Tensor, terminals: torch.Tensor, next_q_target: torch.Tensor,
              next_q_online: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """r + gamma (1 - terminal) Q_target(s', a*): a* = argmax of the target net (DQN), or of
    the online net when `next_q_online` is given (double DQN, van Hasselt et al. 2016)."""
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + gamma * (1.0 - terminals) * next_value


def make_optimizer(params, config: DQNConfig) -> torch.optim.Optimizer:
    params = list(params)
    if config.optimizer == "adam":
        # The fused kernel: one pass over every parameter per operation (the foreach and
        # per-tensor variants make one per tensor).
        return torch.optim.Adam(params, lr=config.lr, eps=config.optimizer_eps, fused=True)
    # torch's centered RMSprop, bit for bit, in one pass per operation (compare.core.optim)
    return FlatRMSprop(params, lr=config.lr, alpha=0.95, eps=config.optimizer_eps, momentum=config.optimizer_momentum)


def newest_frame(obs: np.ndarray, frame_stack: int) -> np.ndarray:
    return obs[:, -1] if frame_stack > 1 else obs


@dataclass
class DQNState(LearnerState):
    next_train: int = 0
    next_target: int = 0


class DQNLearner(Learner, key="dqn", config_type=DQNConfig, presets=DQN_PRESETS, deployed_role="q",
                 family_presets=DQN_FAMILY_PRESETS,
                 state_type=DQNState):
    """Trains a Q-network in `env`; `run` (a `compare.core.runstore.Run`) records everything."""

    @classmethod
    def policy(cls, network: nn.Module, protocol: Protocol, device: torch.device,
               seed: int) -> tuple[Policy, float | None]:
        return greedy_q_policy(network, device), None

    @classmethod
    def check_resources(cls, config: DQNConfig, env) -> None:
        """The replay must fit in this machine's memory (it is allocated lazily, so a larger one
        would fail hours into a run)."""
        needed = replay_frame_bytes(config, env)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > memory:
            raise UsageError(f"buffer_size={config.buffer_size} needs {needed / 2**30:,.1f} GiB of frames; this "
                             f"machine has {memory / 2**30:,.1f} GiB of memory")

    @classmethod
    def setting_warnings(cls, config: DQNConfig, total_steps: int) -> list[str]:
        if config.learning_starts >= total_steps:
            return [f"learning_starts={config.learning_starts:,} is not below the budget of {total_steps:,} steps: "
                    "the network is never updated"]
        per_step = config.gradient_steps / config.train_freq
        if per_step > MAX_REPLAY_RATIO:
            return [f"gradient_steps={config.gradient_steps:,} every train_freq={config.train_freq:,} steps is "
                    f"{per_step:,.0f} updates per agent step (more than {MAX_REPLAY_RATIO}; the presets make at most 1): "
                    f"this run makes {total_updates(config, total_steps):,} updates, the first "
                    f"{config.gradient_steps:,} at step {config.learning_starts:,}"]
        return []

    def __init__(self, networks: dict[str, nn.Module], env, config: DQNConfig, protocol: Protocol,
                 total_steps: int, seed: int, device: torch.device, run, progress=None):
        super().__init__(networks, env, config, protocol, total_steps, seed, device, run, progress)
        self.q = self.deployed
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = make_optimizer(self.q.parameters(), config)
        self.rng = np.random.default_rng(stream_seed(seed, "exploration"))
        self.state.next_train = self.state.next_target = config.learning_starts
        self.replay: ReplayBuffer | None = None
        # What the replay on disk holds: chunk -> step of its file, and each env's entries written
        # at that save (the next checkpoint writes only the chunks changed since).
        self._replay_files: dict[str, int] = {}
        self._replay_saved_written: np.ndarray | None = None
        self._resume_warmup_until = 0
        self._losses: list[torch.Tensor] = []  # of the updates since the last logged episode
        self._estimate_duration = config.gradient_steps / config.train_freq > MAX_REPLAY_RATIO
        # overlap_updates: the acting network is a copy of q, refreshed when a phase is launched
        # and at every begin(); `_phase` is the training phase running in `_worker`.
        self.actor = copy.deepcopy(self.q).requires_grad_(False) if config.overlap_updates else self.q
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="dqn-update") if config.overlap_updates else None
        self._phase: Future | None = None

    # -- acting -----------------------------------------------------------------------------
    def _act(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        n = len(obs)
        explore = self.rng.random(n) < epsilon
        random_actions = self.rng.integers(self.env.n_actions, size=n)
        if explore.all():  # nothing for the network to decide
            return random_actions
        with torch.inference_mode():
            greedy = self.actor(torch.as_tensor(obs, device=self.device)).argmax(dim=1).cpu().numpy()
        return np.where(explore, random_actions, greedy)

    # -- learning ---------------------------------------------------------------------------
    def learning_rate(self) -> float:
        cfg = self.cfg
        return linear_decay(cfg.lr, self.state.step, self.total_steps) if cfg.lr_schedule == "linear" else cfg.lr

    def _update(self, b: Batch, lr: float) -> torch.Tensor:
        """One update; its loss stays on the device (read once per logged episode)."""
        cfg = self.cfg
        dev = self.device
        obs = torch.as_tensor(b.obs, device=dev)
        next_obs = torch.as_tensor(b.next_obs, device=dev)
        actions = torch.as_tensor(b.actions, device=dev)
        with torch.no_grad():
            target = td_target(torch.as_tensor(b.rewards, device=dev), torch.as_tensor(b.terminals, device=dev),
                               self.target(next_obs), self.q(next_obs) if cfg.double_dqn else None, cfg.gamma)
        q_taken = self.q(obs).gather(1, actions[:, None]).squeeze(1)
        loss = F.smooth_l1_loss(q_taken, target) if cfg.loss == "huber" else F.mse_loss(q_taken, target)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.q.parameters(), cfg.max_grad_norm)
        self.opt.step()
        return loss.detach()

    def update_once(self) -> float:
        """One update from a fresh batch at the current step's learning rate (benchmarks, tests)."""
        return float(self._update(self.replay.sample(self.cfg.batch_size), self.learning_rate()))

    def _train_phase(self) -> None:
        """`gradient_steps` updates on batches of the replay as of this step. With
        overlap_updates, its batches are drawn now, the previous phase is finished first, the
        acting network takes its result, and this phase runs in the worker thread while the
        agent goes on acting."""
        cfg = self.cfg
        lr = self.learning_rate()
        if self._worker is None:  # each batch drawn just before its update: the same draws, one batch held
            start = time.perf_counter()
            for i in range(cfg.gradient_steps):
                self._losses.append(self._update(self.replay.sample(cfg.batch_size), lr))
                if i + 1 == ESTIMATE_AFTER and self._estimate_duration:
                    self._estimate_duration = False
                    self._say_duration((time.perf_counter() - start) / ESTIMATE_AFTER)
            return
        batches = [self.replay.sample(cfg.batch_size) for _ in range(cfg.gradient_steps)]
        self._finish_phase()
        self.actor.load_state_dict(self.q.state_dict())
        self._phase = self._worker.submit(lambda: [self._update(b, lr) for b in batches])

    def _say_duration(self, per_update: float) -> None:
        """One line on stderr: how long this run's updates take at the measured rate."""
        updates = total_updates(self.cfg, self.total_steps)
        days, hours = divmod(per_update * updates / 3600, 24)
        print(f"compare: warning: the first {ESTIMATE_AFTER} updates took {per_update * 1e3:.2f} ms each: this run's "
              f"{updates:,} updates take about {days:,.0f} days {hours:.1f} hours "
              "(stop it with Ctrl-C; lower gradient_steps)", file=sys.stderr, flush=True)

    def _finish_phase(self) -> None:
        """Wait for the training phase in flight (before anything reads or writes q, its
        target or optimizer, or logs its losses)."""
        if self._phase is not None:
            phase, self._phase = self._phase, None
            self._losses += phase.result()

    # -- checkpoints ------------------------------------------------------------------------
    def _replay_saved(self) -> bool:
        if self.cfg.save_replay == "auto":
            return self.replay.frames.nbytes < 2**30
        return self.cfg.save_replay == "always"

    def extra_checkpoint(self) -> dict:
        saved = self._replay_saved()
        if saved:
            chunks = self.replay.frame_chunks(since=self._replay_saved_written)
            self._replay_files = self.run.save_replay(self.replay.state_dict(), chunks, self._replay_files,
                                                      step=self.state.step)
            self._replay_saved_written = self.replay.written.copy()
        return {"target": self.target.state_dict(), "numpy_rng": self.rng.bit_generator.state,
                "replay_saved": saved}

    def save_checkpoint(self) -> None:
        super().save_checkpoint()
        if self._replay_saved_written is not None:  # the checkpoint is on disk: older replay files can go
            self.run.prune_replay(self.state.step, self._replay_files)

    def on_schedule(self, episode_ended: bool) -> None:
        if self.evaluation_due() or self.checkpoint_due(episode_ended):
            self._finish_phase()
        super().on_schedule(episode_ended)

    def restore_extra(self, payload: dict) -> None:
        self.target.load_state_dict(payload["target"])
        self.rng.bit_generator.state = payload["numpy_rng"]
        restored = self.run.load_replay(self.state.step) if payload["replay_saved"] else None
        if restored is not None:  # filled now: a replay that does not fit refuses the resume before a log is cut
            state, chunks, self._replay_files = restored
            self.replay = self._new_replay()
            try:
                self.replay.load_state_dict(state, chunks)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise UsageError(f"{self.run.path / 'replay'} does not fit this run ({e}); delete that folder to "
                                 "resume without it (the replay then refills before updates resume)") from None
            self._replay_saved_written = self.replay.written.copy()

    def _new_replay(self) -> ReplayBuffer:
        cfg = self.cfg
        on_device = cfg.replay_device == "device" or (
            cfg.replay_device == "auto" and self.device.type == "cuda"
            and replay_frame_bytes(cfg, self.env) <= torch.cuda.mem_get_info(self.device)[0] / 2)
        if self.run is not None:
            self.run.record(replay_on_device=on_device)
        return ReplayBuffer(cfg.buffer_size, cfg.num_envs, self.env.frame_shape, self.env.frame_dtype,
                            self.env.spec.frame_stack, seed=stream_seed(self.seed, "replay"),
                            device=self.device if on_device else None)

    # -- the loop ---------------------------------------------------------------------------
    def begin(self) -> None:
        """Start fresh episodes; the first time, build the replay (from the checkpoint's, if
        one was saved) and close every episode it holds, since its envs restart."""
        cfg, st = self.cfg, self.state
        super().begin()
        if self.replay is None:  # not restored with the checkpoint (restore_extra)
            self.replay = self._new_replay()
            if st.step > 0:
                # The replay was not checkpointed: refill it before updating again.
                self._resume_warmup_until = st.step + min(cfg.learning_starts, self.total_steps - st.step)
        self.replay.end_episodes()
        self._losses.clear()
        if self.actor is not self.q:  # a checkpoint's point: resumed or not, the actor is q
            self.actor.load_state_dict(self.q.state_dict())

    def train_until(self, limit: int) -> None:
        """Act, store and learn until `limit` agent steps (in whole vector steps)."""
        cfg, st, env = self.cfg, self.state, self.env
        k = env.spec.frame_stack
        losses = self._losses
        rate = StepRate(st.step)
        while st.step < limit:
            eps = cfg.epsilon(st.step, self.total_steps)
            obs = self.obs
            actions = self._act(obs, eps)
            out = env.step(actions)
            reward, terminal = training_signal(out, self.protocol)
            self.replay.add(newest_frame(obs, k), actions, reward, terminal, out.done, out.final_frame)
            self.obs = out.obs
            st.step += env.num_envs

            while st.step >= st.next_train:
                # Training phases that fall in a post-resume refill are skipped, not caught up.
                if st.step >= self._resume_warmup_until and self.replay.sampleable() >= cfg.batch_size:
                    self._train_phase()
                st.next_train += cfg.train_freq
            while st.step >= st.next_target:
                self._finish_phase()
                self.target.load_state_dict(self.q.state_dict())
                st.next_target += cfg.target_update_period

            rate.update(st.step)
            if out.finished:
                self._finish_phase()  # its losses belong to this record, as in the serial loop
                self.log_episodes([(st.step, score, length) for _, score, length in out.finished], rate.rate,
                                  epsilon=round(eps, 6),
                                  loss=float(np.mean(torch.stack(losses).tolist())) if losses else None)
                losses.clear()
                if self.progress is not None:
                    self.progress.set_postfix(ret=f"{out.finished[-1][1]:.1f}", eps=f"{eps:.2f}", refresh=False)
            elif self.progress is not None:
                self.progress.update(st.step - self.progress.n)
            self.on_schedule(episode_ended=bool(out.done.all()))
        self._finish_phase()


def total_updates(config: DQNConfig, total_steps: int) -> int:
    """The updates a run of `total_steps` agent steps makes: `gradient_steps` per training phase,
    one phase every `train_freq` steps from `learning_starts` on."""
    return max(0, (total_steps - config.learning_starts) // config.train_freq + 1) * config.gradient_steps


def replay_frame_bytes(config: DQNConfig, env) -> int:
    """The bytes of frames a full replay of `config` holds in `env`."""
    return config.buffer_size * int(np.prod(env.frame_shape)) * np.dtype(env.frame_dtype).itemsize
