"""The ANN baselines: `dqn` (a Q-network trained by the DQN learner) and `ppo` (an ANN actor
trained by the PPO learner with an ANN critic). Each is one plug-in object: its options and
the network it deploys; the learners, evaluation and run store do the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compare.core.dqn import DQNLearner
from compare.core.methods import TrainedMethod
from compare.core.networks import build_ann
from compare.core.ppo import PPOLearner


@dataclass(frozen=True)
class AnnOptions:
    mlp_hidden: tuple[int, ...] = (256, 256)  # hidden widths for vector observations
    arch: Literal["default", "speck"] = "default"  # speck: the chip-mappable Atari network


DQN = TrainedMethod(
    name="dqn",
    description="ANN DQN (Nature CNN / MinAtar CNN / MLP)",
    options_type=AnnOptions,
    learner=DQNLearner,
    build_network=lambda opts, family, obs_shape, n_actions: build_ann(
        family, obs_shape, n_actions, opts.mlp_hidden, opts.arch),
)


@dataclass(frozen=True)
class AnnActorOptions:
    mlp_hidden: tuple[int, ...] = (64, 64)     # actor widths for vector observations
    critic_hidden: tuple[int, ...] = (64, 64)  # critic widths for vector observations


PPO = TrainedMethod(
    name="ppo",
    description="PPO with an ANN actor and a separate ANN critic (Schulman et al. 2017)",
    options_type=AnnActorOptions,
    learner=PPOLearner,
    build_network=lambda opts, family, obs_shape, n_actions: build_ann(
        family, obs_shape, n_actions, opts.mlp_hidden),
)
