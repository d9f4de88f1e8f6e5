"""The learner plug-in: what every learner declares, and the scaffolding they all share.

A learner (`DQNLearner`, `PPOLearner`) is a class that declares, in its class statement,
    key             the config.json section of its hyperparameters ("dqn", "ppo")
    config_type     the typed dataclass of those hyperparameters
    presets         named configs (`--preset`), and `family_presets`, the default per env family
    deployed_role   the network a trained run deploys and evaluates ("q", "actor")
    state_type      its checkpointed counters (a `LearnerState` with fields of its own)
Its key also names the ANN method it trains (dqn, ppo): the table's reference for the energy
of every method this learner trains. A learner implements `networks` (the method's network
plus whatever else it trains, by role), `policy` (how the deployed network acts under a
protocol), `begin` and `train_until` (the loop), and the extra state its checkpoints hold.
Logging, periodic evaluation, checkpoints, resumption and the saved weights are this module's,
identical for every learner.

Every checkpoint is an episode boundary: after saving, the learner starts fresh episodes in
all its envs from a seed of that step, exactly as a resumed run does, so a run resumed from a
checkpoint (with its replay) is identical to a run that was never interrupted. With one env
(every DQN preset) a due checkpoint waits for the episode to end, so nothing is cut; with
several (PPO), the episodes in flight are cut there and not logged, which is why automatic
checkpoints are at least AUTO_CHECKPOINT_MIN steps apart.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from compare.core.accounting import CostMeter, liveness_warning
from compare.core.config import unknown_name_message
from compare.core.envs import Step, VecEnv
from compare.core.errors import UsageError
from compare.core.evaluation import EvalResult, Policy, evaluate_policy
from compare.core.protocols import Protocol
from compare.core.seeding import stream_seed

RATE_INTERVAL = 2_000  # agent steps over which steps/s is measured
AUTO_CHECKPOINT_MIN = 10_000  # agent steps between automatic checkpoints, at least


def training_signal(step: Step, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """The reward and no-bootstrap flag a learner trains on; scores stay unclipped."""
    reward = np.sign(step.reward) if protocol.clip_rewards else step.reward
    terminal = step.terminated | (step.life_lost & protocol.life_loss_terminal)
    return reward.astype(np.float32), terminal


@dataclass
class LearnerState:
    """Counters every checkpoint restores; learners add their own fields."""

    step: int = 0
    episodes: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0


class StepRate:
    """The sustained rate: agent steps per second over the latest whole interval of
    RATE_INTERVAL agent steps, everything in it counted (updates, evaluations, checkpoints);
    before the first interval ends, the rate since the start."""

    def __init__(self, step: int):
        self._mark = time.perf_counter(), step  # the start of the interval being measured
        self._full = False
        self.rate = 0.0

    def update(self, step: int) -> float:
        now = time.perf_counter()
        seconds = max(now - self._mark[0], 1e-9)
        if step - self._mark[1] >= RATE_INTERVAL:
            self.rate = (step - self._mark[1]) / seconds
            self._mark, self._full = (now, step), True
        elif not self._full:  # the first interval: the rate since the start
            self.rate = (step - self._mark[1]) / seconds
        return self.rate


class Learner:
    key: ClassVar[str]
    config_type: ClassVar[type]
    presets: ClassVar[dict[str, object]]
    family_presets: ClassVar[dict[str, str]]
    deployed_role: ClassVar[str]
    state_type: ClassVar[type[LearnerState]]

    def __init_subclass__(cls, *, key: str, config_type: type, presets: dict[str, object],
                          family_presets: dict[str, str], deployed_role: str,
                          state_type: type[LearnerState] = LearnerState, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.key, cls.config_type, cls.presets, cls.family_presets = key, config_type, presets, family_presets
        cls.deployed_role, cls.state_type = deployed_role, state_type

    # -- what a learner declares ------------------------------------------------------------
    @classmethod
    def preset(cls, name: str):
        if name not in cls.presets:
            raise UsageError(unknown_name_message("preset", name, list(cls.presets)))
        return cls.presets[name]

    @classmethod
    def networks(cls, network: nn.Module, options, family: str, obs_shape: tuple[int, ...]) -> dict[str, nn.Module]:
        """Every network this learner trains, by role, around the method's own `network`."""
        return {cls.deployed_role: network}

    @classmethod
    def policy(cls, network: nn.Module, protocol: Protocol, device: torch.device,
               seed: int) -> tuple[Policy, float | None]:
        """How the deployed network acts in an evaluation, and the epsilon of random actions
        (None: the protocol's eval_epsilon)."""
        raise NotImplementedError

    @classmethod
    def check_resources(cls, config, env: VecEnv) -> None:
        """Raise a UsageError if `config` cannot run on this machine in `env` (before a run
        directory is made)."""

    @classmethod
    def setting_warnings(cls, config, total_steps: int) -> list[str]:
        """Settings that run but are unlikely to mean what they say (printed at the start)."""
        return []

    @staticmethod
    def deployed_weights(saved: dict, roles: list[str], role: str) -> dict:
        """The deployed network's state dict from model.pt (one network: its state dict;
        several: a dict by role)."""
        return saved if len(roles) == 1 else saved[role]

    # -- shared scaffolding -----------------------------------------------------------------
    def __init__(self, networks: dict[str, nn.Module], env: VecEnv, config, protocol: Protocol,
                 total_steps: int, seed: int, device: torch.device, run, progress=None):
        self.networks = {role: net.to(device) for role, net in networks.items()}
        self.cfg, self.protocol, self.env = config, protocol, env
        self.total_steps, self.seed, self.device = total_steps, seed, device
        self.run, self.progress = run, progress
        self.state = self.state_type(next_eval=protocol.eval_interval or total_steps + 1,
                                     next_checkpoint=self.checkpoint_interval)
        self.obs: np.ndarray | None = None

    @property
    def deployed(self) -> nn.Module:
        return self.networks[self.deployed_role]

    @property
    def checkpoint_interval(self) -> int:
        return self.cfg.checkpoint_interval or max(AUTO_CHECKPOINT_MIN, self.total_steps // 10)

    def begin(self) -> None:
        """Start episodes in every env (at step 0, after each checkpoint and on resume)."""
        self.obs = self.env.reset(seed=stream_seed(self.seed, "train_env", self.state.step))

    def train_until(self, limit: int) -> None:
        raise NotImplementedError

    def train(self) -> None:
        """The whole run: start (or continue) the episodes, train to the budget, save."""
        self.begin()
        self.train_until(self.total_steps)
        self.run.save_weights(self.saved_weights())
        self.save_checkpoint()

    def saved_weights(self) -> dict:
        if len(self.networks) == 1:
            return self.deployed.state_dict()
        return {role: net.state_dict() for role, net in self.networks.items()}

    def log_episodes(self, finished: list[tuple[int, float, int]], rate: float, **extra) -> None:
        """One metrics record per finished episode (step it ended at, score, length)."""
        st = self.state
        for step, score, length in finished:
            st.episodes += 1
            self.run.log_metric({"step": step, "frames": step * self.env.spec.frameskip, "episode": st.episodes,
                                 "episode_return": score, "episode_length": length, **extra,
                                 "steps_per_s": round(rate, 1)})
        if self.progress is not None:
            if finished:
                self.progress.set_postfix(ret=f"{finished[-1][1]:.1f}", refresh=False)
            self.progress.update(min(st.step, self.total_steps) - self.progress.n)

    def evaluation_due(self) -> bool:
        return self.state.step >= self.state.next_eval

    def checkpoint_due(self, episode_ended: bool) -> bool:
        """`episode_ended`: the last step ended an episode in every env, a point where a
        checkpoint cuts nothing."""
        st = self.state
        return st.next_checkpoint <= st.step < self.total_steps and (episode_ended or self.env.num_envs > 1)

    def on_schedule(self, episode_ended: bool) -> None:
        """Periodic evaluation and checkpoint, when their step has come."""
        st = self.state
        if self.evaluation_due():
            with CostMeter(self.deployed, synapses=False) as meter:  # firing rates: is it alive?
                result = self.evaluate(self.protocol.periodic_eval_episodes,
                                       stream_seed(self.seed, "periodic_eval", st.step))
            firing = meter.firing()
            warning = liveness_warning(f"{self.run.path.name} at step {st.step:,}", firing)
            if warning:
                print(warning, file=sys.stderr)
            self.run.log_eval({"step": st.step, "frames": st.step * self.env.spec.frameskip, **result.summary(),
                               **firing})
            st.next_eval += self.protocol.eval_interval
        if self.checkpoint_due(episode_ended):
            while st.next_checkpoint <= st.step:
                st.next_checkpoint += self.checkpoint_interval
            self.save_checkpoint()
            self.begin()

    def evaluate(self, episodes: int, seed: int) -> EvalResult:
        """Score the deployed network under the protocol (separate env, unclipped score)."""
        net = self.deployed
        net.eval()
        try:
            policy, epsilon = self.policy(net, self.protocol, self.device, seed)
            return evaluate_policy(policy, self.env.spec, self.protocol, episodes, seed, epsilon=epsilon)
        finally:
            net.train()

    # -- checkpoints ------------------------------------------------------------------------
    def extra_checkpoint(self) -> dict:
        """What this learner's checkpoint holds besides its networks, optimizer and counters."""
        return {}

    def restore_extra(self, payload: dict) -> None:
        pass

    def save_checkpoint(self) -> None:
        payload = {"train_state": dataclasses.asdict(self.state),
                   **{role: net.state_dict() for role, net in self.networks.items()},
                   "optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state(),
                   # PPO and the hybrid sample actions on the device; empty for a CPU run
                   "cuda_rng": (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                                else torch.empty(0, dtype=torch.uint8)),
                   **self.extra_checkpoint()}
        self.run.save_checkpoint(payload)

    def load_checkpoint(self, payload: dict) -> None:
        for role, net in self.networks.items():
            net.load_state_dict(payload[role])
        self.opt.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])
        cuda_rng = payload.get("cuda_rng")  # empty: written by a CPU run; absent: an older checkpoint
        if self.device.type == "cuda" and cuda_rng is not None and cuda_rng.numel():
            torch.cuda.set_rng_state(cuda_rng, self.device)
        self.state = self.state_type(**payload["train_state"])
        self.restore_extra(payload)


def linear_decay(value: float, step: int, total_steps: int) -> float:
    """`value` decayed linearly to 0 at `total_steps` (the lr and clip schedules)."""
    return value * max(0.0, 1.0 - step / total_steps)

