"""Toy methods in a package of their own, found by compare through its entry points (the
`compare.methods` group in compare_toy_methods-0.1.dist-info/entry_points.txt, as `pip install`
writes it): nothing in compare/, direct/ or converters/ names them.

- `toy_q`, `toy_ac`: an ANN Q-network and an ANN actor on the project's learners;
- `toy_spiking`: a spiking Q-network of one hidden LIF layer, built on the core's spiking
  builder, trained by the DQN learner, and exported to NIR by the DSQN's exporter.
"""

from dataclasses import dataclass

from torch import nn

from compare.core.dqn import DQNLearner
from compare.core.methods import TrainedMethod
from compare.core.networks import build_ann, pixel_divisor, synapse_stack
from compare.core.ppo import PPOLearner
from direct.dsqn import DSQNOptions, SpikingQNetwork


@dataclass(frozen=True)
class ToyOptions:
    width: int = 16
    critic_hidden: tuple[int, ...] = (16,)  # the PPO learner's ANN critic


def toy_network(options: ToyOptions, family: str, obs_shape: tuple[int, ...], n_actions: int) -> nn.Module:
    return build_ann(family, obs_shape, n_actions, (options.width,))


@dataclass(frozen=True)
class ToySpikingOptions:
    width: int = 32
    timesteps: int = 4
    tau_mem: float = 2.0


def toy_spiking_network(options: ToySpikingOptions, family: str, obs_shape: tuple[int, ...],
                        n_actions: int) -> SpikingQNetwork:
    neurons = DSQNOptions(timesteps=options.timesteps, tau_mem=options.tau_mem, mlp_hidden=(options.width,),
                          bias=True, surrogate="super", surrogate_alpha=100.0)
    synapses = synapse_stack(family, obs_shape, n_actions, (options.width,), bias=True)
    return SpikingQNetwork(synapses, neurons, pixel_divisor(family))


TOY_Q = TrainedMethod(name="toy_q", description="a toy Q-network", options_type=ToyOptions,
                      learner=DQNLearner, build_network=toy_network)
TOY_AC = TrainedMethod(name="toy_ac", description="a toy actor", options_type=ToyOptions,
                       learner=PPOLearner, build_network=toy_network)
TOY_SPIKING = TrainedMethod(name="toy_spiking", description="a toy spiking Q-network (one LIF layer)",
                            options_type=ToySpikingOptions, learner=DQNLearner, build_network=toy_spiking_network,
                            exports={"nir": "direct.nir_export:export_dsqn_nir"})
