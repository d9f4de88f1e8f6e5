"""Environments behind one vectorized interface: ALE Atari games, classic control and MinAtar.

Atari runs on ale-py's native `AtariVectorEnv` (C++ threads; 84x84 grayscale, frame skip 4 with
max-pooling, no-op and fire resets) with rewards left unclipped: the learner clips them for its
own training signal, the evaluator sums the real game score. Frames are stacked here rather than
by ale-py, so the replay buffer rebuilds exactly the stacks the agent saw (see `FrameStacker`).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from compare.core.errors import UsageError
from compare.core.protocols import Protocol

Family = Literal["atari", "classic", "minatar"]

# Classic-control tasks and the default training budget (agent steps) of each.
CLASSIC_BUDGETS = {"CartPole-v1": 50_000, "Acrobot-v1": 100_000, "MountainCar-v0": 200_000}
# MinAtar games (Young & Tian 2019); their paper trains for 5M frames (= agent steps).
MINATAR_GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway",
                 "Seaquest": "seaquest", "SpaceInvaders": "space_invaders"}
MINATAR_BUDGET = 5_000_000
ATARI_FRAME_SKIP = 4
ATARI_STACK = 4


@dataclass(frozen=True)
class EnvSpec:
    """What a learner needs to know about an environment before building it."""

    name: str                 # canonical: "Pong", "CartPole-v1", "MinAtar/Breakout"
    family: Family
    frameskip: int            # emulator frames per agent step
    frame_stack: int          # observations stacked into one network input
    default_budget: int | None = None  # agent steps; None: the protocol's Atari budget
    ale_id: str | None = None

    @property
    def slug(self) -> str:
        """File-system-safe name used in run directories."""
        return self.name.replace("/", "-")

    def budget(self, protocol: Protocol) -> int:
        return self.default_budget if self.default_budget is not None else protocol.atari_budget_steps


@lru_cache(maxsize=1)
def _atari_names() -> dict[str, str]:
    from ale_py import roms

    return {rom_id: rom_id.title().replace("_", "") for rom_id in roms.get_all_rom_ids()}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def all_env_names() -> list[str]:
    return (sorted(_atari_names().values()) + list(CLASSIC_BUDGETS)
            + [f"MinAtar/{g}" for g in MINATAR_GAMES])


def resolve_env(name: str) -> EnvSpec:
    """Map a user-given name (`Pong`, `ALE/Pong-v5`, `CartPole-v1`, `MinAtar/Breakout`) to a spec."""
    raw = name.strip()
    for canonical, budget in CLASSIC_BUDGETS.items():
        base = canonical.split("-v")[0]
        if _key(raw) in (_key(canonical), _key(base)):
            return EnvSpec(canonical, "classic", frameskip=1, frame_stack=1, default_budget=budget)
    if _key(raw).startswith("minatar"):
        game = re.sub(r"-v\d+$", "", re.split(r"[/\-]", raw, maxsplit=1)[-1]) if re.search(r"[/\-]", raw) else ""
        for canonical in MINATAR_GAMES:
            if _key(game) == _key(canonical):
                return EnvSpec(f"MinAtar/{canonical}", "minatar", frameskip=1, frame_stack=1,
                               default_budget=MINATAR_BUDGET)
    else:
        game = re.sub(r"^ALE/", "", raw, flags=re.IGNORECASE)
        game = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", game)
        for rom_id, canonical in _atari_names().items():
            if _key(game) == _key(rom_id):
                return EnvSpec(canonical, "atari", frameskip=ATARI_FRAME_SKIP, frame_stack=ATARI_STACK,
                               ale_id=rom_id)
    names = all_env_names()
    by_key = {_key(n): n for n in names}
    close = [by_key[k] for k in difflib.get_close_matches(_key(raw), list(by_key), n=5, cutoff=0.6)]
    hint = f"closest: {', '.join(close)}" if close else f"e.g. Pong, Breakout, {', '.join(CLASSIC_BUDGETS)}, MinAtar/Breakout"
    raise UsageError(f"unknown game {name!r}; {hint} (`compare games` lists all {len(names)})")


class FrameStacker:
    """Keeps the last `k` frames per env; a new episode starts with its first frame repeated.

    The replay buffer pads stacks at episode starts the same way (`ReplayBuffer._stack`).
    """

    def __init__(self, num_envs: int, k: int, frame_shape: tuple[int, ...], dtype):
        self.stack = np.zeros((num_envs, k, *frame_shape), dtype=dtype)

    def reset(self, frames: np.ndarray, envs: np.ndarray | None = None) -> None:
        if envs is None:
            self.stack[:] = frames[:, None]
        else:
            self.stack[envs] = frames[envs][:, None]

    def push(self, frames: np.ndarray) -> None:
        self.stack[:, :-1] = self.stack[:, 1:]
        self.stack[:, -1] = frames

    def observation(self) -> np.ndarray:
        return self.stack.copy()

    def pushed(self, frames: np.ndarray) -> np.ndarray:
        """The stacks `push(frames)` would make, leaving these unchanged."""
        return np.concatenate([self.stack[:, 1:], frames[:, None]], axis=1)


@dataclass
class Step:
    """One step of every env. Finished envs have already been reset (same-step autoreset)."""

    obs: np.ndarray             # next network input; for a finished env, its new episode's first
    reward: np.ndarray          # raw game reward, unclipped
    terminated: np.ndarray
    truncated: np.ndarray
    life_lost: np.ndarray       # a life was lost but the game goes on
    final_frame: np.ndarray     # newest frame of the last observation of finished episodes
    finished: list[tuple[int, float, int]] = field(default_factory=list)  # (env, score, length)
    # The whole last observation (network input) of finished episodes, for bootstrapping a
    # truncation from its value; None when no episode finished. Other envs' rows mean nothing.
    final_obs: np.ndarray | None = None

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


class VecEnv:
    """`num_envs` copies of one environment with frame stacking and episode bookkeeping."""

    def __init__(self, spec: EnvSpec, protocol: Protocol, num_envs: int):
        from gymnasium.vector import AutoresetMode

        self.spec = spec
        self.num_envs = num_envs
        if spec.family == "atari":
            from ale_py.vector_env import AtariVectorEnv

            # Rewards stay unclipped and episodes end on game over: both training-signal
            # choices are the learner's, made from the protocol.
            self._env = AtariVectorEnv(
                spec.ale_id, num_envs, num_threads=min(num_envs, os.cpu_count() or 1),
                repeat_action_probability=protocol.sticky_action_prob,
                frameskip=spec.frameskip, stack_num=1, img_height=84, img_width=84, grayscale=True,
                maxpool=True, noop_max=protocol.noop_max, use_fire_reset=protocol.fire_reset,
                full_action_space=protocol.full_action_space, episodic_life=False,
                reward_clipping=False, max_num_frames_per_episode=protocol.max_episode_frames,
                autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            import gymnasium as gym

            kwargs = {}
            if spec.family == "minatar":
                import minatar.gym

                if "MinAtar/Breakout-v1" not in gym.registry:
                    minatar.gym.register_envs()
                env_id = f"{spec.name}-v1"  # MinAtar's minimal action set unless the protocol wants all 6
                kwargs = dict(use_minimal_action_set=not protocol.full_action_space,
                              sticky_action_prob=protocol.sticky_action_prob,
                              max_episode_steps=protocol.max_episode_frames // spec.frameskip)
            else:
                env_id = spec.name
            self._env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                                     vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
        self.n_actions = int(self._env.single_action_space.n)
        self._stacker: FrameStacker | None = None
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    def _frames(self, obs) -> np.ndarray:
        """The single newest frame per env, in the dtype and layout the replay stores."""
        obs = np.asarray(obs)
        if self.spec.family == "atari":
            return obs[:, -1]                       # (N, 84, 84) uint8
        if self.spec.family == "minatar":
            return np.moveaxis(obs, -1, 1).astype(np.uint8)  # (N, C, 10, 10)
        return obs.astype(np.float32)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self._frame_shape

    @property
    def frame_dtype(self) -> np.dtype:
        return self._stacker.stack.dtype

    @property
    def obs_shape(self) -> tuple[int, ...]:
        k = self.spec.frame_stack
        return (k, *self._frame_shape) if k > 1 else self._frame_shape

    def reset(self, seed: int) -> np.ndarray:
        obs, info = self._env.reset(seed=seed)
        frames = self._frames(obs)
        self._frame_shape = frames.shape[1:]
        self._stacker = FrameStacker(self.num_envs, self.spec.frame_stack, frames.shape[1:], frames.dtype)
        self._stacker.reset(frames)
        self._lives = np.asarray(info.get("lives", self._lives)).astype(np.int64).copy()
        self._returns[:] = 0
        self._lengths[:] = 0
        return self._observation()

    def _as_input(self, stacks: np.ndarray) -> np.ndarray:
        return stacks if self.spec.frame_stack > 1 else stacks[:, 0]

    def _observation(self) -> np.ndarray:
        return self._as_input(self._stacker.observation())

    def step(self, actions: np.ndarray) -> Step:
        obs, reward, terminated, truncated, info = self._env.step(np.asarray(actions))
        reward = np.asarray(reward, dtype=np.float64)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        frames = self._frames(obs)
        final_frame = np.zeros_like(frames)
        if done.any():
            finals = info["final_obs"]
            for i in np.flatnonzero(done):
                final_frame[i] = self._frames(np.asarray(finals[i])[None])[0]
        self._returns += reward
        self._lengths += 1
        finished = [(int(i), float(self._returns[i]), int(self._lengths[i])) for i in np.flatnonzero(done)]
        self._returns[done] = 0
        self._lengths[done] = 0
        lives = np.asarray(info["lives"], dtype=np.int64) if "lives" in info else self._lives
        life_lost = (lives < self._lives) & ~done
        self._lives = lives.copy()
        final_obs = self._as_input(self._stacker.pushed(final_frame)) if done.any() else None
        self._stacker.push(frames)
        if done.any():
            self._stacker.reset(frames, np.flatnonzero(done))
        return Step(self._observation(), reward, terminated, truncated, life_lost,
                    final_frame, finished, final_obs)

    def close(self) -> None:
        self._env.close()
