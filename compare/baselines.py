"""The ANN baselines: `dqn` (a Q-network trained by the DQN learner) and `ppo` (an ANN actor
trained by the PPO learner with an ANN critic). Each is one plug-in object: its options and
the network it deploys; the learners, evaluation and run store do the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from compare.core.config import check_widths
from compare.core.dqn import DQNLearner
from compare.core.methods import TrainedMethod
from compare.core.networks import build_ann
from compare.core.ppo import PPOLearner


@dataclass(frozen=True)
class AnnOptions:
    mlp_hidden: tuple[int, ...] = (256, 256)  # hidden widths for vector observations
    arch: Literal["default", "speck"] = "default"  # speck: the chip-mappable Atari network

    def __post_init__(self):
        check_widths(self, "mlp_hidden")


def ann_network(options, family: str, obs_shape: tuple[int, ...], n_actions: int) -> nn.Module:
    """The family's ANN (`mlp_hidden` widths for vector observations; `arch`, where the options
    have it, picks the Speck network on Atari)."""
    return build_ann(family, obs_shape, n_actions, options.mlp_hidden, getattr(options, "arch", "default"))


@dataclass(frozen=True)
class AnnActorOptions:
    mlp_hidden: tuple[int, ...] = (64, 64)     # actor widths for vector observations
    critic_hidden: tuple[int, ...] = (64, 64)  # critic widths for vector observations
    # True: CleanRL's ppo_atari.py Agent, the critic one linear output on the actor's last hidden
    # layer (critic_hidden unused); False: a separate critic network, as every actor-critic here.
    shared_trunk: bool = False

    def __post_init__(self):
        check_widths(self, "mlp_hidden", "critic_hidden")


# converters.hardware.CHIP_TARGETS, named here so that a dqn run does not load sinabs
CHIP_TARGETS = ("speck2f", "speck2e", "dynapcnn")
DQN = TrainedMethod("dqn", "ANN DQN (Nature CNN / MinAtar CNN / MLP)", AnnOptions, DQNLearner, ann_network,
                    exports={target: "converters.export:export_ann_to_chip" for target in CHIP_TARGETS})
PPO = TrainedMethod("ppo", "PPO with an ANN actor and a separate (or shared-trunk) ANN critic (Schulman et al. 2017)",
                    AnnActorOptions, PPOLearner, ann_network)
