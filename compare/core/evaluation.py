"""Scoring a policy under a protocol: a separate env, unclipped full-game score, eps_eval."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from compare.core.envs import EnvSpec, VecEnv
from compare.core.protocols import Protocol
from compare.core.seeding import stream_seed

if TYPE_CHECKING:  # torch is imported where a network runs: `compare table` reads this module
    import torch

Policy = Callable[[np.ndarray], np.ndarray]  # observation batch -> greedy actions


@dataclass
class EvalResult:
    episode_returns: list[float]
    episode_lengths: list[int]

    def summary(self) -> dict:
        returns = np.asarray(self.episode_returns, dtype=np.float64)
        return {"episodes": len(returns), "mean_return": float(returns.mean()),
                "std_return": float(returns.std()), "episode_returns": self.episode_returns,
                "episode_lengths": self.episode_lengths}


def greedy_q_policy(q_network: torch.nn.Module, device: torch.device) -> Policy:
    import torch

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return q_network(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
    return act


def evaluate_policy(policy: Policy, spec: EnvSpec, protocol: Protocol, episodes: int, seed: int,
                    max_envs: int = 8, epsilon: float | None = None) -> EvalResult:
    """Play `episodes` full episodes; each env plays a fixed share, so short episodes are not
    over-represented. Actions are random with probability `epsilon` (the protocol's eps_eval).
    Every observation batch the policy acts on goes through `policy`, so a policy that records
    what it sees (calibration, conformance) sees every visited state."""
    epsilon = protocol.eval_epsilon if epsilon is None else epsilon
    num_envs = min(episodes, max_envs)
    quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
    env = VecEnv(spec, protocol, num_envs)
    rng = np.random.default_rng(seed)
    returns: list[list[float]] = [[] for _ in range(num_envs)]
    lengths: list[list[int]] = [[] for _ in range(num_envs)]
    try:
        obs = env.reset(seed=seed)
        while any(len(r) < q for r, q in zip(returns, quota)):
            actions = policy(obs)
            explore = rng.random(num_envs) < epsilon
            actions = np.where(explore, rng.integers(env.n_actions, size=num_envs), actions)
            out = env.step(actions)
            for i, score, length in out.finished:
                if len(returns[i]) < quota[i]:
                    returns[i].append(score)
                    lengths[i].append(length)
            obs = out.obs
    finally:
        env.close()
    return EvalResult([r for per_env in returns for r in per_env],
                      [n for per_env in lengths for n in per_env])


def select_operating_point(sweep: list[dict]) -> tuple[dict, str]:
    """The entry of a derived run's sweep (e.g. one per T) that it reports, and how it was chosen.

    Chosen on validation episodes (`validation_mean_return`, played from a seed stream of their
    own), never on the test episodes it reports: the best of several noisy test means is biased
    upwards (the winner's curse). Ties go to the first entry (the smallest T). A sweep of one
    entry needs no choice ("only"); a sweep recorded without validation scores (runs made before
    this rule) falls back to the best test mean, "test", which is optimistic.
    """
    if len(sweep) == 1:
        return sweep[0], "only"
    if all(isinstance(e.get("validation_mean_return"), (int, float)) for e in sweep):
        return max(sweep, key=lambda e: e["validation_mean_return"]), "validation"
    return best_on_test(sweep), "test"


def best_on_test(sweep: list[dict]) -> dict:
    """The entry with the best test mean: an optimistic choice, shown only on request."""
    return max(sweep, key=lambda e: e["mean_return"])


def any_action(obs: np.ndarray) -> np.ndarray:
    """A placeholder policy: with epsilon 1 every action is the uniform-random one."""
    return np.zeros(len(obs), dtype=np.int64)


def random_policy_result(spec: EnvSpec, protocol: Protocol, episodes: int, seed: int) -> EvalResult:
    """A uniform-random policy's episodes under the protocol (the `random` of a normalization)."""
    return evaluate_policy(any_action, spec, protocol, episodes, seed, epsilon=1.0)


class _Enough(Exception):
    pass


def visited_observations(act: Policy, spec: EnvSpec, protocol: Protocol, count: int, epsilon: float,
                         seed_of_round: Callable[[int], int]) -> np.ndarray:
    """The first `count` observation rows that `act` (at `epsilon`) is shown while it plays whole
    rounds of 8 episodes, round r seeded by `seed_of_round(r)`; play stops mid-episode once
    enough are seen (calibration of a conversion, liveness probes)."""
    seen: list[np.ndarray] = []
    total = 0

    def record(obs: np.ndarray) -> np.ndarray:
        nonlocal total
        seen.append(obs.copy())
        total += len(obs)
        if total >= count:
            raise _Enough
        return act(obs)

    round_ = 0
    try:
        while True:
            evaluate_policy(record, spec, protocol, episodes=8, seed=seed_of_round(round_), epsilon=epsilon)
            round_ += 1
    except _Enough:
        pass
    return np.concatenate(seen)[:count]


def random_observations(spec: EnvSpec, protocol: Protocol, count: int, seed: int, stream: str) -> np.ndarray:
    """`count` observations a uniform-random policy visits (run seed `seed`, seed stream
    `stream` indexed by round)."""
    return visited_observations(any_action, spec, protocol, count, 1.0, lambda r: stream_seed(seed, stream, r))
