"""Evaluation protocols: how the environment is set up for training and how a policy is scored.

Each preset names the paper it follows. Every field can be overridden (`--set FIELD=VALUE`) and
the resolved protocol is saved with every run, so a table never pools runs made differently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from compare.core.config import unknown_name_message
from compare.core.errors import UsageError


@dataclass(frozen=True)
class Protocol:
    name: str
    # Environment dynamics (training and evaluation alike).
    sticky_action_prob: float = 0.0     # Machado 2018 uses 0.25; ale-py's vector env defaults to 0.0
    noop_max: int = 30                  # random no-ops at every episode start
    fire_reset: bool = True             # press FIRE after reset in games that need it
    full_action_space: bool = False     # minimal action set, as every DQN paper
    max_episode_frames: int = 108_000   # episode cap in emulator frames (27k agent steps at skip 4)
    # Training signal.
    clip_rewards: bool = True           # learner sees sign(reward); scores are always unclipped
    life_loss_terminal: bool = True     # losing a life ends bootstrapping (training only)
    # Evaluation.
    eval_epsilon: float = 0.05
    eval_episodes: int = 30
    eval_interval: int = 250_000        # agent steps between periodic evaluations (0: final only)
    periodic_eval_episodes: int = 10
    # Actor-critic methods (ppo, hybrid): sample actions from the policy with no extra epsilon
    # (the PPO literature's convention), or act greedily with eval_epsilon like the Q-methods.
    actor_eval: Literal["sample", "greedy"] = "sample"
    # Default budget for Atari games, in agent steps of 4 frames (small environments use their
    # own): Mnih et al. 2015's 50M frames.
    atari_budget_steps: int = 12_500_000

    def __post_init__(self):
        if not 0.0 <= self.sticky_action_prob <= 1.0:
            raise UsageError(f"sticky_action_prob={self.sticky_action_prob} must lie in [0, 1]")
        if not 0.0 <= self.eval_epsilon <= 1.0:
            raise UsageError(f"eval_epsilon={self.eval_epsilon} must lie in [0, 1]")
        for name in ("eval_episodes", "periodic_eval_episodes", "max_episode_frames", "atari_budget_steps"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name}={getattr(self, name)} must be a positive integer")
        for name in ("noop_max", "eval_interval"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name}={getattr(self, name)} must be zero or positive")


PROTOCOLS: dict[str, Protocol] = {
    # Mnih et al. 2015, and both spiking-DQN papers (Chen 2022, Liu 2022).
    "nature": Protocol(name="nature"),
    # Machado et al. 2018: sticky actions replace no-op starts, no life-loss signal. Evaluation
    # epsilon 0.001 and 100 episodes follow Dopamine's sticky-action setting; budget their
    # longest reporting point, 200M frames (they report at 10M, 50M, 100M and 200M).
    "machado": Protocol(name="machado", sticky_action_prob=0.25, life_loss_terminal=False,
                        noop_max=0, eval_epsilon=0.001, eval_episodes=100, atari_budget_steps=50_000_000),
    # Chen et al. 2022's reporting: the nature protocol with 30 evaluation episodes every 100k
    # agent steps (their train.py: `frame_idx` counts wrapped-env steps, 4 frames each), the best
    # of which is reported (`compare table --score best-eval`).
    "chen2022": Protocol(name="chen2022", eval_interval=100_000, periodic_eval_episodes=30),
    # Atari-100k (Kaiser et al. 2020): 100k agent steps, 100 evaluation episodes.
    "atari100k": Protocol(name="atari100k", eval_episodes=100, atari_budget_steps=100_000,
                          eval_interval=0),
    # Young & Tian 2019 (MinAtar): minatar.Environment(game)'s defaults in their examples/dqn.py,
    # sticky actions 0.1 and the full 6-action set (difficulty ramping on, as in every MinAtar run
    # here). They report training returns (`compare table --score train-ma100`); the evaluation
    # fields are the nature protocol's.
    "youngtian2019": Protocol(name="youngtian2019", sticky_action_prob=0.1, full_action_space=True),
}
# Protocols written for one environment family only.
PROTOCOL_FAMILIES = {"youngtian2019": "minatar"}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UsageError(unknown_name_message("protocol", name, list(PROTOCOLS)))
    return PROTOCOLS[name]


def check_protocol_family(name: str, family: str, game: str) -> None:
    """A protocol written for one environment family refuses games of another."""
    only = PROTOCOL_FAMILIES.get(name)
    if only is not None and family != only:
        allowed = [p for p in PROTOCOLS if PROTOCOL_FAMILIES.get(p, family) == family]
        raise UsageError(f"--protocol {name} is for {only} games (MinAtar/<Game>), not {game}; allowed for "
                         f"{game}: {', '.join(allowed)}")


def protocol_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Protocol) if f.name != "name"]
