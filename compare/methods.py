"""Method registry. A method is a plug-in: one module and one line in `REGISTRY`.

Q-value methods (`QMethod`) only build a network; the shared DQN learner, evaluation protocol
and run store do the rest. Actor-critic methods (`ActorCriticMethod`) only build an actor; the
shared PPO learner pairs it with an ANN critic.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from compare.config import unknown_name_message
from compare.dqn import default_dqn_preset
from compare.errors import UsageError
from compare.networks import build_ann_q_network
from compare.ppo import default_ppo_preset

# name -> "module:attribute"; imported only when the method is used, so that the CLI never
# loads a library (sinabs, norse) that the command at hand does not need.
REGISTRY: dict[str, str] = {
    "dqn": "compare.methods:DQN",
    "dsqn": "direct.dsqn:DSQN",
    "convert": "converters.convert:CONVERT",
    "ppo": "compare.methods:PPO",
    "hybrid": "direct.hybrid:HYBRID",
}


@dataclass(frozen=True)
class QMethod:
    name: str
    description: str
    options_type: type          # dataclass of the method's own settings (`--set` keys)
    build_q_network: Callable[..., nn.Module]  # (options, family, obs_shape, n_actions) -> module
    preset_for: Callable[[str], str] = default_dqn_preset  # env family -> DQN preset name
    # Method options that a preset of the same name brings along (e.g. dsqn's `liu2022`).
    option_presets: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ActorCriticMethod:
    """A policy-gradient method: the actor it deploys; the PPO learner adds an ANN critic
    (`critic_hidden` in the options) that is used only in training."""

    name: str
    description: str
    options_type: type          # must have `critic_hidden`
    build_actor: Callable[..., nn.Module]  # (options, family, obs_shape, n_actions) -> logits module
    preset_for: Callable[[str], str] = default_ppo_preset
    option_presets: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DerivedMethod:
    """A method that builds a new run from a finished one (`--source RUN_DIR`)."""

    name: str
    description: str
    options_type: type
    run: Callable  # (source run dir, options, results root, protocol overrides, name=None) -> Run


@dataclass(frozen=True)
class AnnOptions:
    mlp_hidden: tuple[int, ...] = (256, 256)  # hidden widths for vector observations
    arch: Literal["default", "speck"] = "default"  # speck: the chip-mappable Atari network


DQN = QMethod(
    name="dqn",
    description="ANN DQN (Nature CNN / MinAtar CNN / MLP)",
    options_type=AnnOptions,
    build_q_network=lambda opts, family, obs_shape, n_actions: build_ann_q_network(
        family, obs_shape, n_actions, opts.mlp_hidden, opts.arch),
)


@dataclass(frozen=True)
class AnnActorOptions:
    mlp_hidden: tuple[int, ...] = (64, 64)     # actor widths for vector observations
    critic_hidden: tuple[int, ...] = (64, 64)  # critic widths for vector observations


def build_critic(options, family: str, obs_shape: tuple[int, ...]) -> nn.Module:
    """The ANN critic of every actor-critic method: the family's ANN with one output."""
    return build_ann_q_network(family, obs_shape, 1, options.critic_hidden)


PPO = ActorCriticMethod(
    name="ppo",
    description="PPO with an ANN actor and a separate ANN critic (Schulman et al. 2017)",
    options_type=AnnActorOptions,
    build_actor=lambda opts, family, obs_shape, n_actions: build_ann_q_network(
        family, obs_shape, n_actions, opts.mlp_hidden),
)


def get_method(name: str) -> QMethod | ActorCriticMethod | DerivedMethod:
    if name not in REGISTRY:
        raise UsageError(unknown_name_message("method", name, list(REGISTRY)))
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)
